"""Finding 12: the database, the secret and all data files are private to the service user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx

from tests.conftest import start_server, stop_server


def test_data_dir_is_private_after_serving(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual default: what a service is typically started with
    try:
        server = start_server(tmp_path / "data")
    finally:
        os.umask(old)
    try:
        res = httpx.post(
            f"{server.url}/image/create",
            auth=("api", server.admin_key),
            json={
                "project_id": "admin/perm",
                "inputs": {"model": "local/procedural", "prompt": "a fox", "size": "256x256"},
            },
            timeout=60,
        )
        assert res.status_code == 200, res.text
    finally:
        stop_server(server)
    data = tmp_path / "data"
    seen = {p.name for p in data.rglob("*")}
    assert {"imagegate.db", "secret.key", "files"} <= seen
    open_to_others = [
        f"{p.relative_to(tmp_path)} {stat.filemode(p.stat().st_mode)}"
        for p in [data, *data.rglob("*")]
        if p.stat().st_mode & 0o077
    ]
    assert open_to_others == []
