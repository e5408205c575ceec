"""A real `imagegate serve` process: first start, the CLI, and limits seen on the wire."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import IMAGEGATE_BIN, Backend, LiveServer, start_server, stop_server


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMAGEGATE_BIN), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_first_start_prints_admin_key_and_curl_example(live_server: LiveServer) -> None:
    text = "".join(live_server.output)
    assert live_server.admin_key.startswith("ig_")
    assert "curl" in text and live_server.url in text
    res = httpx.get(f"{live_server.url}/server_info", auth=("api", live_server.admin_key))
    assert res.status_code == 200


def test_key_printed_once_only(tmp_path: Path, backend: Backend) -> None:
    data = tmp_path / "data"
    first = start_server(data, backend.env)
    stop_server(first)
    second = start_server(data, backend.env)
    stop_server(second)
    assert first.admin_key and not second.admin_key


def test_the_curl_example_works(live_server: LiveServer) -> None:
    res = subprocess.run(
        [
            "curl",
            "-s",
            "-u",
            f"api:{live_server.admin_key}",
            f"{live_server.url}/image/create",
            "-d",
            '{"project_id": "admin/demo", "inputs": {"model": "local/procedural", "prompt": "hi"}}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"weave_call_id"' in res.stdout


def test_keys_commands(tmp_path: Path, backend: Backend) -> None:
    data = str(tmp_path / "data")
    env = backend.env
    made = cli("keys", "create", "--user", "erin", "--entity", "studio", "--data-dir", data, **env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("ig_") and len(key) > 40
    listed = cli("keys", "list", "--data-dir", data, **env)
    assert "erin" in listed.stdout and key[:9] in listed.stdout and key not in listed.stdout
    key_id = listed.stdout.splitlines()[1].split()[0]

    server = start_server(tmp_path / "data", env)
    try:
        ok = httpx.post(
            f"{server.url}/calls/query_stats", json={"project_id": "studio/p"}, auth=("api", key)
        )
        assert ok.status_code == 200
        revoked = cli("keys", "revoke", key_id, "--data-dir", data, **env)
        assert revoked.returncode == 0, revoked.stderr
        gone = httpx.post(
            f"{server.url}/calls/query_stats", json={"project_id": "studio/p"}, auth=("api", key)
        )
        assert gone.status_code == 401
    finally:
        stop_server(server)
    assert "revoked" in cli("keys", "list", "--data-dir", data, **env).stdout
    again = cli("keys", "revoke", key_id, "--data-dir", data, **env)
    assert again.returncode != 0 and "no active key" in again.stderr
    bad = cli("keys", "create", "--user", "../evil", "--data-dir", data, **env)
    assert bad.returncode != 0 and "invalid user name" in bad.stderr


def test_generate_command_saves_images(live_server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = cli(
        "generate",
        "a purple castle",
        "-n",
        "3",
        "--size",
        "512x512",
        "--project",
        "admin/cli",
        "--out",
        str(out),
        IMAGEGATE_URL=live_server.url,
        IMAGEGATE_API_KEY=live_server.admin_key,
    )
    assert res.returncode == 0, res.stderr
    paths = [Path(line) for line in res.stdout.splitlines()]
    assert len(paths) == 3
    for path in paths:
        assert Image.open(path).size == (512, 512)
    assert "Generating 3 image(s)" in res.stderr
    bad = cli(
        "generate",
        "x",
        "-n",
        "11",
        "--project",
        "admin/cli",
        "--out",
        str(out),
        IMAGEGATE_URL=live_server.url,
        IMAGEGATE_API_KEY=live_server.admin_key,
    )
    assert bad.returncode != 0 and "HTTP 422" in bad.stderr


def test_chunked_oversized_body_is_cut_off(live_server: LiveServer) -> None:
    """No Content-Length: the server must stop reading past the limit, not buffer 20 MB."""
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /image/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: Bearer "
            + live_server.admin_key.encode()
            + b"\r\n\r\n"
        )
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < 20 * 1024 * 1024:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    assert httpx.get(f"{live_server.url}/health").status_code == 200


def test_declared_oversized_body_is_refused_before_reading(live_server: LiveServer) -> None:
    res = httpx.post(
        f"{live_server.url}/image/create",
        content=b"{" + b" " * (20 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
        auth=("api", live_server.admin_key),
    )
    assert res.status_code == 413
