"""Generations that fail are still recorded, and the caller gets a clear answer.

Remote failures come from a real local server speaking OpenAI's protocol (503s, 429s,
HTML pages, hung requests, a port nobody listens on), so they go through the real
OpenAI adapter, the official SDK and imagegate's retries, as in production.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.providers import ImageRequest, ProviderResult
from imagegate.store import LocalFileStore
from imagegate.store.objectstore import s3_store
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, Reply, error_body, refused_url

KEY = "sk-failures-0123456789abcdef"
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


class CrashingProvider:
    """A bug in our own code (no remote failure looks like this)."""

    async def generate(self, request: ImageRequest) -> ProviderResult:
        raise RuntimeError("bug with /secret/path in it")


def catalog(fake: FakeOpenAI) -> str:
    return f"""
[models."test/remote"]
provider = "openai"
upstream_model = "remote"
base_url = "{fake.url}/v1"
params = ["size"]
sizes = ["1024x1024"]
retry_base_s = 0.01

# The only short timeout: its requests are the hung ones.
[models."test/hung"]
alias_of = "test/remote"
timeout_s = 0.5

[models."test/unreachable"]
alias_of = "test/remote"
base_url = "{refused_url()}/v1"

[models."test/crashing"]
provider = "crashing"
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


@pytest.fixture
def providers() -> dict[str, Any]:
    return {"crashing": CrashingProvider()}


async def create_and_read(client: httpx.AsyncClient, key: str, model: str) -> tuple[dict, dict]:
    res = await client.post(
        "/image/create",
        json={"project_id": "alice/fails", "inputs": {"model": model, "prompt": "x"}},
        headers=basic(key),
    )
    assert res.status_code == 200, res.text
    body = res.json()
    call = await client.post(
        "/call/read",
        json={"project_id": "alice/fails", "id": body["weave_call_id"]},
        headers=basic(key),
    )
    return body, call.json()["call"]


@dataclass
class Failure:
    replies: list[Reply]
    model: str
    error_type: str
    message: str
    status_code: int | None
    attempts: list[int | None]  # the status of each attempt, in order


FAILURES = {
    "overloaded": Failure(
        [Reply(503, json=error_body("upstream is overloaded"), headers={"Retry-After": "0"})] * 3,
        "test/remote", "provider_error", "upstream is overloaded", 503, [503] * 3,
    ),
    "rate_limited": Failure(
        [Reply(429, json=error_body("slow down", "rate_limit_exceeded"),
               headers={"Retry-After": "0"})] * 3,
        "test/remote", "rate_limit", "slow down", 429, [429] * 3,
    ),
    "html_error_page": Failure(
        [Reply(502, body=HTML_502, content_type="text/html")] * 3,
        "test/remote", "provider_error", "502", 502, [502] * 3,
    ),
    "html_instead_of_json": Failure(
        [Reply(body=HTML_502, content_type="text/html")],
        "test/remote", "provider_error", "malformed response", None, [None],
    ),
    "not_an_image": Failure(
        [Reply(json={"created": 1, "data": [
            {"b64_json": base64.b64encode(b"<html>not an image</html>").decode()}]})],
        "test/remote", "provider_error", "not an image", None, [200],
    ),
    # Sent, then no answer: the provider may have billed it, so it is asked only once.
    "hung": Failure(
        [Reply(hang=True)],
        "test/hung", "timeout", "did not answer within 0.5s", None, [None],
    ),
    "connection_refused": Failure(
        [], "test/unreachable", "provider_error", "could not connect to the provider", None,
        [None] * 3,
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", FAILURES)
async def test_failed_generation_is_recorded(
    client, users: Users, fake: FakeOpenAI, kind: str
) -> None:
    failure = FAILURES[kind]
    fake.push(*failure.replies)
    body, call = await create_and_read(client, users.alice, failure.model)
    response = body["response"]
    attempts = call["summary"]["attempts"]
    assert response["error_type"] == failure.error_type, (response, attempts)
    assert failure.message in response["error"], (response, attempts)
    assert response.get("status_code") == failure.status_code, (response, attempts)
    assert [a.get("status_code") for a in attempts] == failure.attempts, attempts
    assert len(fake.requests) == len(failure.replies), attempts  # each reply was asked for
    assert "data" not in response
    assert call["exception"].startswith(f"{failure.error_type}: ")
    assert call["summary"]["weave"]["status"] == "error"
    assert call["summary"]["error"]["type"] == failure.error_type
    assert call["output"] is None
    assert call["ended_at"] is not None
    assert KEY not in str(body) + str(call)


async def test_a_crash_in_our_code_is_an_internal_error_without_details(
    client, users: Users
) -> None:
    body, call = await create_and_read(client, users.alice, "test/crashing")
    response = body["response"]
    assert response["error_type"] == "internal_error" and "internal error" in response["error"]
    assert call["exception"].startswith("internal_error: ")
    assert call["summary"]["weave"]["status"] == "error" and call["output"] is None
    assert "/secret/path" not in str(body) + str(call)


async def test_retried_server_error_then_success(client, users: Users, fake: FakeOpenAI) -> None:
    fake.push(Reply(503, body=HTML_502, content_type="text/html"), Reply())
    body, call = await create_and_read(client, users.alice, "test/remote")
    attempts = call["summary"]["attempts"]
    assert [a["status_code"] for a in attempts] == [503, 200], attempts
    assert len(body["response"]["data"]) == 1, body["response"]
    assert call["summary"]["weave"]["status"] == "success"


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (400, "invalid_value", "invalid_request"),
        (401, "invalid_api_key", "auth"),
        (403, None, "auth"),
        (404, "model_not_found", "model_not_found"),
        (409, None, "invalid_request"),
        (422, None, "invalid_request"),
    ],
)
async def test_other_client_errors_are_not_retried(
    client, users: Users, fake: FakeOpenAI, status: int, code: str | None, error_type: str
) -> None:
    """test/remote has the default three attempts: a 4xx other than 429 uses one."""
    fake.push(*[Reply(status, json=error_body(f"refused with {status}", code))] * 3)
    body, call = await create_and_read(client, users.alice, "test/remote")
    attempts = call["summary"]["attempts"]
    assert [a["status_code"] for a in attempts] == [status], attempts
    assert len(fake.requests) == 1, attempts
    assert body["response"]["error_type"] == error_type, body["response"]
    assert body["response"]["status_code"] == status


async def test_storage_failure_is_recorded_without_claiming_images(
    client, users: Users, settings: Settings, imagegate: Imagegate
) -> None:
    if isinstance(imagegate.files, LocalFileStore):
        # A plain file where the project's directory must go: writes fail even as root.
        (settings.files_dir / "alice").mkdir(parents=True)
        (settings.files_dir / "alice" / "fails").write_text("in the way")
    else:
        # The same S3 server, a bucket that does not exist: every write is refused.
        imagegate.files.store = s3_store("s3://no-such-bucket/x", imagegate.settings.environ)
    res = await client.post(
        "/image/create",
        json={"project_id": "alice/fails", "inputs": {"model": "local/procedural", "prompt": "x"}},
        headers=basic(users.alice),
    )
    body = res.json()
    assert res.status_code == 200
    assert body["response"]["error_type"] == "storage_error"
    call = await client.post(
        "/call/read",
        json={"project_id": "alice/fails", "id": body["weave_call_id"]},
        headers=basic(users.alice),
    )
    call = call.json()["call"]
    assert call["exception"].startswith("storage_error")
    assert call["output"] is None
