"""Images a provider answers with as URLs: what the downloader refuses and where it
stops, against a real local server (no redirects followed, names that resolve to
loopback refused, a deadline, a size limit taken from Content-Length)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import Settings
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, Reply

KEY = "sk-downloads-0123456789abcdef"
LIMIT = 1_000_000


def catalog(fake: FakeOpenAI) -> str:
    return f"""
[models."test/urls"]
provider = "openai"
upstream_model = "urls"
base_url = "{fake.url}/v1"
params = ["size"]
size_range = [64, 2048]
upstream_response_format = "url"
trusted_url_hosts = ["127.0.0.1:{fake.port}"]
max_download_bytes = {LIMIT}
max_attempts = 1

[models."test/untrusted"]
alias_of = "test/urls"
trusted_url_hosts = []

# The only short timeout: the download it fetches never finishes.
[models."test/slow-download"]
alias_of = "test/urls"
timeout_s = 0.5
"""


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    models = tmp_path / "models.toml"
    models.write_text(catalog(fake))
    return replace(settings, models_file=models)


async def generate(client: httpx.AsyncClient, key: str, model: str) -> dict[str, Any]:
    res = await client.post(
        "/image/create",
        json={"project_id": "alice/urls", "inputs": {"model": model, "prompt": "a red fox"}},
        headers=basic(key),
    )
    assert res.status_code == 200, res.text
    response: dict[str, Any] = res.json()["response"]
    return response


async def test_a_trusted_url_is_downloaded(client, users: Users, fake: FakeOpenAI) -> None:
    """The control for the refusals below: the same fake, a plain image URL."""
    fake.push(Reply(urls=[f"{fake.url}/img/2.png"]))
    response = await generate(client, users.alice, "test/urls")
    assert len(response["data"]) == 1, response
    assert fake.downloads == 1


async def test_redirects_are_not_followed(client, users: Users, fake: FakeOpenAI) -> None:
    # A trusted host whose URL redirects (here to an image on the same host; it could
    # as well point at a metadata service).
    fake.push(Reply(urls=[f"{fake.url}/redirect/2.png"]))
    response = await generate(client, users.alice, "test/urls")
    assert response["error_type"] == "provider_error", response
    assert "image URL answered HTTP 302" in response["error"]
    assert fake.downloads == 1  # the redirect itself, never its target


async def test_a_name_that_resolves_to_loopback_is_refused(
    client, users: Users, fake: FakeOpenAI
) -> None:
    """Not an IP literal: `localhost` is resolved, and its address is what is checked."""
    fake.push(Reply(urls=[f"http://localhost:{fake.port}/img/1.png"]))
    response = await generate(client, users.alice, "test/untrusted")
    assert response["error_type"] == "provider_error", response
    assert "refusing image URL: localhost resolves to a non-public address" in response["error"]
    assert "127.0.0.1" in response["error"] or "::1" in response["error"]
    assert fake.downloads == 0


async def test_a_download_that_never_finishes_times_out(
    client, users: Users, fake: FakeOpenAI
) -> None:
    fake.push(Reply(urls=[f"{fake.url}/hanging.png"]))
    started = time.monotonic()
    response = await generate(client, users.alice, "test/slow-download")
    assert response["error_type"] == "timeout", response
    assert "downloading the image took longer than 0.5s" in response["error"]
    assert fake.downloads == 1
    assert time.monotonic() - started < 30


async def test_declared_size_over_the_limit_is_refused_before_reading(
    client, users: Users, fake: FakeOpenAI
) -> None:
    """The fake declares 50 MB, sends one small chunk, then stalls for a minute: only a
    downloader that refuses on Content-Length answers now (the model's timeout is the
    default two minutes)."""
    fake.push(Reply(urls=[f"{fake.url}/declared/{50 * LIMIT}.png"]))
    started = time.monotonic()
    response = await generate(client, users.alice, "test/urls")
    assert f"image at URL is larger than the limit of {LIMIT} bytes" in response["error"]
    assert time.monotonic() - started < 30
    assert fake.downloads == 1
