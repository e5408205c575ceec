"""Helpers for tests that run `imagegate serve` as an operator would: a model catalog
on the fake OpenAI server, the CLI, keys made with it, and a generation request."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import httpx

from tests.conftest import IMAGEGATE_BIN
from tests.fake_openai import FakeOpenAI

KEY = "sk-deploy-0123456789abcdef"
PROJECT = "admin/deploy"
PNG = b"\x89PNG"


def models_toml(fake: FakeOpenAI) -> str:
    return f"""
[models."test/priced"]
provider = "openai"
upstream_model = "priced"
base_url = "{fake.url}/v1"
params = ["size", "response_format"]
sizes = ["1024x1024"]
max_attempts = 1
prices = {{ per_image = {{ "-:1024x1024" = 0.04 }} }}

# No base_url of its own: OPENAI_BASE_URL decides where it goes.
[models."test/env-base-url"]
provider = "openai"
upstream_model = "from-env"
params = ["size"]
sizes = ["1024x1024"]
max_attempts = 1
"""


def cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMAGEGATE_BIN), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def new_key(user: str, entity: str, env: dict[str, str]) -> str:
    made = cli("keys", "create", "--user", user, "--entity", entity, env=env)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


async def create(
    client: httpx.AsyncClient, model: str = "test/priced", project: str = PROJECT, **more: Any
) -> httpx.Response:
    headers = more.pop("headers", {})
    inputs = {"model": model, "prompt": "a red fox", **more}
    return await client.post(
        "/image/create", json={"project_id": project, "inputs": inputs}, headers=headers
    )
