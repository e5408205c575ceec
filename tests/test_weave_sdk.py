"""The real Weave SDK (weave 0.54, unchanged) against a live imagegate process, as a
user runs it: a separate process with only WANDB_BASE_URL and WANDB_API_KEY set, and its
own TMPDIR and HOME (weave caches uploads under TMPDIR, shared across processes, and
would skip uploading to a fresh server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import weave  # noqa: F401 (a broken install must fail this module, never skip it)

from tests.conftest import IMAGEGATE_BIN, Backend, LiveServer

SCRIPT = Path(__file__).with_name("weave_sdk_script.py")


def sdk_env(server: LiveServer, key: str, tmp_path: Path) -> dict[str, str]:
    for name in ("tmp", "home"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {
        "WANDB_BASE_URL": server.url,
        "WANDB_API_KEY": key,
        "TMPDIR": str(tmp_path / "tmp"),
        "HOME": str(tmp_path / "home"),
    }


def create_key(server: LiveServer, backend: Backend, user: str, entity: str) -> str:
    res = subprocess.run(
        [str(IMAGEGATE_BIN), "keys", "create", "--user", user, "--entity", entity,
         "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **backend.env},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def acme_key(live_server: LiveServer, module_backend: Backend) -> str:
    return create_key(live_server, module_backend, "alice", "acme")


def test_weave_sdk_end_to_end(live_server: LiveServer, acme_key: str, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "acme/posters"],
        env=sdk_env(live_server, acme_key, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    transcript = res.stdout + res.stderr
    assert res.returncode == 0, transcript
    [line] = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    results: dict[str, Any] = json.loads(line.removeprefix("RESULT "))

    # Generous bounds for a loaded 2-core CI machine; the measured figures are reported.
    assert results["init_s"] < 5, transcript
    assert results["flush_100_s"] < 5, transcript
    assert results["calls"] == 103  # pipeline, render, step(-1) and 100 steps
    assert results["tree"] == {
        "root_op": "pipeline",
        "child_op": "render",
        "same_trace": True,
        "image_size": [32, 32],
        "image_pixel": [200, 40, 40],
    }
    assert results["feedback"] == [
        ["wandb.note.1", json.dumps({"note": "lovely red"})],
        ["wandb.reaction.1", json.dumps({"emoji": "👍"})],
    ]
    assert results["feedback_after_purge"] == [results["note_id"]]
    assert results["display_name"] == "Red square"
    generated = results["image_create"]
    assert generated["call_id"] and generated["status"] == "success"
    assert generated["images"] >= 1 and generated["size"] == [256, 256]
    assert "501" in results["unserved"] and "does not implement" in results["unserved"]
    assert results["unserved_requests"] == 1  # reported at once: the client did not retry
    assert results["deleted_gone"] is True
    assert results["after_delete"] == results["calls"] - 2 + 1  # + the image_create call
    assert results["deleted_image_files"], "the PIL image was not stored as a file"
    assert results["deleted_image_status"] == [404] * len(results["deleted_image_files"])


def test_weave_init_for_another_entity_fails_clearly(
    live_server: LiveServer, module_backend: Backend, tmp_path: Path
) -> None:
    carol = create_key(live_server, module_backend, "carol", "carol")
    res = subprocess.run(
        [sys.executable, "-c", "import weave; weave.init('acme/posters')"],
        env=sdk_env(live_server, carol, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "You do not have permission to access or create project `acme/posters`" in res.stderr
