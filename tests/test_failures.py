"""Generations that fail are still recorded, and the caller gets a clear answer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.providers import ImageRequest, ProviderError, ProviderResult
from imagegate.providers.base import GeneratedImage
from imagegate.store import LocalFileStore
from imagegate.store.objectstore import s3_store
from tests.conftest import Users, basic


class BrokenProvider:
    """Fails the way a remote provider does: an error with a status code."""

    async def generate(self, request: ImageRequest) -> ProviderResult:
        raise ProviderError("upstream is overloaded", error_type="provider_error", status_code=503)


class GarbageProvider:
    async def generate(self, request: ImageRequest) -> ProviderResult:
        return ProviderResult(images=[GeneratedImage(data=b"<html>not an image</html>")])


class CrashingProvider:
    async def generate(self, request: ImageRequest) -> ProviderResult:
        raise RuntimeError("bug with /secret/path in it")


CATALOG = """
[models."test/broken"]
provider = "broken"
params = ["size"]
[models."test/garbage"]
provider = "garbage"
[models."test/crashing"]
provider = "crashing"
"""


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    models = tmp_path / "models.toml"
    models.write_text(CATALOG)
    return replace(settings, models_file=models)


@pytest.fixture
def providers() -> dict[str, Any]:
    return {
        "broken": BrokenProvider(),
        "garbage": GarbageProvider(),
        "crashing": CrashingProvider(),
    }


async def create_and_read(client, key: str, model: str) -> tuple[dict, dict]:
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


@pytest.mark.parametrize(
    ("model", "error_type", "message", "status_code"),
    [
        ("test/broken", "provider_error", "upstream is overloaded", 503),
        ("test/garbage", "provider_error", "not an image", None),
        ("test/crashing", "internal_error", "internal error", None),
    ],
)
async def test_failed_generation_is_recorded(
    client, users: Users, model: str, error_type: str, message: str, status_code: int | None
) -> None:
    body, call = await create_and_read(client, users.alice, model)
    response = body["response"]
    assert response["error_type"] == error_type
    assert message in response["error"]
    assert response.get("status_code") == status_code
    assert "data" not in response
    assert call["exception"].startswith(f"{error_type}: ")
    assert call["summary"]["weave"]["status"] == "error"
    assert call["summary"]["error"]["type"] == error_type
    assert call["output"] is None
    assert call["ended_at"] is not None
    assert "/secret/path" not in str(body) + str(call)


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
