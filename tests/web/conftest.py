"""Fixtures for the web gallery: signed-in HTTP clients on the in-process app (the
top-level `app`, `client` and `users` fixtures), and helpers to read pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from imagegate.core import Imagegate
from imagegate.schemas import ImageGenerationCreateReq
from imagegate.store import Principal

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "page has no CSRF field"
    return match[1]


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await client.get("/ui/signin")
    res = await client.post(
        "/ui/signin", data={"csrf_token": csrf_of(page.text), "api_key": key, "next": ""}
    )
    assert res.status_code == 303, res.text
    return res


async def token_for(client: httpx.AsyncClient, path: str = "/ui/projects") -> str:
    """The CSRF token a signed-in page hands this client."""
    page = await client.get(path)
    assert page.status_code == 200, page.status_code
    return csrf_of(page.text)


Client = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def browser_for(app: FastAPI) -> AsyncIterator[Client]:
    """`await browser_for(key)`: a new client (its own cookie jar) signed in with `key`."""
    clients: list[httpx.AsyncClient] = []

    async def make(key: str, base_url: str = "http://testserver") -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
        clients.append(client)
        await sign_in(client, key)
        return client

    yield make
    for client in clients:
        await client.aclose()


Generate = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def generate(imagegate: Imagegate) -> Generate:
    """`await generate(key, project_id, prompt, **inputs)`: a generation through the
    service, as the API would make it; returns the call in wire form."""

    async def make(key: str, project_id: str, prompt: str, **inputs: Any) -> dict[str, Any]:
        principal = await imagegate.accounts.authenticate(key)
        assert isinstance(principal, Principal)
        req = ImageGenerationCreateReq.model_validate(
            {
                "project_id": project_id,
                "inputs": {"model": "local/procedural", "prompt": prompt, "size": "256x256"}
                | inputs,
            }
        )
        generation = await imagegate.generation.generate(principal, project_id, req.inputs)
        assert generation.call_id is not None
        call = await imagegate.calls.read(project_id, generation.call_id)
        assert call is not None
        return call

    return make
