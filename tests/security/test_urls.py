"""Findings 9 and 10: signed image URLs expire, are signed with a key of their own, never
take their host from a request's Host header, and replays never carry an earlier host.
Stored provider keys use a key ring and can be re-encrypted."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate
from tests.conftest import IMAGEGATE_BIN, basic


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Imagegate, str]]:
    """A client for an app on `settings`, and a key for user alice."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ig: Imagegate = app.state.imagegate
        key = await ig.accounts.create_key("alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, ig, key


async def url_of(client: httpx.AsyncClient, key: str, **headers: str) -> str:
    body = {
        "project_id": "alice/u",
        "inputs": {"model": "local/procedural", "prompt": "fox", "size": "256x256", "seed": 1,
                   "response_format": "url"},
    }  # fmt: skip
    res = await client.post("/image/create", json=body, headers={**basic(key), **headers})
    assert res.status_code == 200, res.text
    # The signed link sits in the image's Content (the Weave shape: data[0].url is the
    # Content reference itself).
    url: str = res.json()["response"]["data"][0]["content"]["url"]
    return url


async def test_host_header_never_reaches_a_url_by_default(settings: Settings) -> None:
    async with running(settings) as (client, _, key):
        url = await url_of(client, key, Host="evil.example")
        assert "evil.example" not in url
        assert url.startswith("/files/alice/u/")  # relative: the page's own origin
        assert (await client.get(url)).status_code == 200


async def test_allowed_hosts_and_public_url(settings: Settings) -> None:
    allowed = dataclasses.replace(settings, allowed_hosts=frozenset({"images.example"}))
    async with running(allowed) as (client, _, key):
        assert (await url_of(client, key, Host="images.example")).startswith(
            "http://images.example/files/"
        )
        assert "evil" not in await url_of(client, key, Host="evil.example")
    public = dataclasses.replace(allowed, public_url="https://img.example.com")
    async with running(public) as (client, _, key):
        url = await url_of(client, key, Host="images.example")
        assert url.startswith("https://img.example.com/files/")


async def test_replay_does_not_carry_the_first_requests_host(settings: Settings) -> None:
    hosts = frozenset({"a.example", "b.example"})
    async with running(dataclasses.replace(settings, allowed_hosts=hosts)) as (client, _, key):
        first = await url_of(client, key, Host="a.example", **{"Idempotency-Key": "k1"})
        replay = await url_of(client, key, Host="b.example", **{"Idempotency-Key": "k1"})
        assert first.startswith("http://a.example/")
        assert replay.startswith("http://b.example/")


async def test_urls_expire_and_are_stable_within_a_window(settings: Settings) -> None:
    async with running(dataclasses.replace(settings, url_ttl=2)) as (client, _, key):
        url = await url_of(client, key)
        assert "exp=" in url
        assert (await client.get(url)).status_code == 200
        expires = int(httpx.URL(url).params["exp"])
        await asyncio.sleep(max(0.0, expires - time.time()) + 0.2)
        res = await client.get(url)
        assert res.status_code == 401
        assert "expired" in res.json()["detail"]


async def test_same_window_gives_the_same_url(settings: Settings) -> None:
    async with running(settings) as (client, _, key):
        assert await url_of(client, key) == await url_of(client, key)


async def test_rotating_the_signing_key_keeps_secrets_readable(settings: Settings) -> None:
    one = dataclasses.replace(settings, signing_secret="signing-one")  # IMAGEGATE_SIGNING_KEY
    async with running(one) as (client, ig, key):
        await ig.accounts.ensure_project("alice/u")
        await ig.secrets.set("alice", "OPENAI_API_KEY", "sk-secret-value")
        url = await url_of(client, key)
        assert (await client.get(url)).status_code == 200
    two = dataclasses.replace(settings, signing_secret="signing-two")
    async with running(two) as (client, ig, _):
        assert (await client.get(url)).status_code == 401  # every old URL revoked
        assert await ig.secrets.get("alice", "OPENAI_API_KEY") == "sk-secret-value"


def cli(data_dir: Any, env: dict[str, str], *args: str, stdin: str = "") -> str:
    res = subprocess.run(
        [str(IMAGEGATE_BIN), *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, timeout=120,
        env={**os.environ, "IMAGEGATE_TEST_BACKENDS": "sqlite", **env},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


async def test_key_ring_decrypts_old_values_and_reencrypt_moves_them(tmp_path: Any) -> None:
    data = tmp_path / "data"
    old = {"IMAGEGATE_SECRET_KEY": "old-root-secret"}
    cli(data, old, "keys", "create", "--user", "alice")
    cli(data, old, "secrets", "set", "--entity", "alice", "OPENAI_API_KEY", stdin="sk-one\n")
    ring = {**old, "IMAGEGATE_ENCRYPTION_KEYS": "new-key,old-root-secret"}
    assert "re-encrypted 1" in cli(data, ring, "secrets", "reencrypt")
    new_only = {"IMAGEGATE_SECRET_KEY": "unrelated", "IMAGEGATE_ENCRYPTION_KEYS": "new-key"}
    for env in (ring, new_only):
        ig = Imagegate(Settings.from_env({**env, "IMAGEGATE_DATA_DIR": str(data)}))
        try:
            assert await ig.secrets.get("alice", "OPENAI_API_KEY") == "sk-one"
        finally:
            await ig.close()
