"""The official `openai` npm package under Node against a live `imagegate serve`: generate,
edit with two images and a mask, stream (generation and edit), errors. The package is
installed by scripts/deps/node-openai.sh into tests/node/node_modules (no network here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, Backend, LiveServer, basic, start_server, stop_server
from tests.test_openai_sdk import hole_mask, png

NODE_DIR = REPO / "tests" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("Node.js is not installed (scripts/deps/node-openai.sh installs it)")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the openai npm package is missing: run scripts/deps/node-openai.sh")
    return binary


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_backend: Backend
) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("node") / "data", module_backend.env)
    yield live
    stop_server(live)


def test_node_sdk_generates_edits_and_streams(
    node: str, server: LiveServer, tmp_path: Path
) -> None:
    paths = {
        "IMAGE_A": tmp_path / "a.png",
        "IMAGE_B": tmp_path / "b.png",
        "MASK": tmp_path / "mask.png",
    }
    paths["IMAGE_A"].write_bytes(png((200, 30, 30)))
    paths["IMAGE_B"].write_bytes(png((30, 30, 200)))
    paths["MASK"].write_bytes(hole_mask())
    env = {
        **os.environ,
        "IMAGEGATE_URL": server.url,
        "IMAGEGATE_KEY": server.admin_key,
        **{name: str(path) for name, path in paths.items()},
    }
    run = subprocess.run(
        [node, "door.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    transcript = json.loads(run.stdout)
    assert [step["call"] for step in transcript] == [
        "client.images.generate",
        "client.images.edit",
        "client.images.generate (stream)",
        "client.images.edit (stream)",
        "client.images.generate",
        "client.images.generate",
    ]
    if out := os.environ.get("IMAGEGATE_TRANSCRIPTS"):
        Path(out, "node-sdk.json").write_text(run.stdout)
    # Recorded like any request, in the project the SDK's `project` option named.
    res = httpx.post(
        f"{server.url}/calls/stream_query",
        json={"project_id": "admin/node"},
        headers=basic(server.admin_key),
    )
    calls = [json.loads(line) for line in res.text.splitlines() if line.strip()]
    assert [c["op_name"] for c in calls] == [
        "weave.image_generation_create",
        "weave.image_edit_create",
        "weave.image_generation_create",
        "weave.image_edit_create",
    ]
    assert all(c["summary"]["weave"]["status"] == "success" for c in calls)
    assert len(calls[1]["inputs"]["image"]) == 2 and "mask" in calls[1]["inputs"]
