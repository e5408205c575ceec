"""A real `imagegate serve` process: first start, the CLI, and limits seen on the wire."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import IMAGEGATE_BIN, Backend, LiveServer, start_server, stop_server


def cli(*args: str, umask: int = 0o022, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMAGEGATE_BIN), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        umask=umask,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


def test_a_port_in_use_is_refused_before_anything_is_prepared(tmp_path: Path) -> None:
    """A first start on a taken port would create the database and print an admin key,
    then fail to listen: it fails first, and changes nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(IMAGEGATE_BIN), "serve", "--port", str(port), "--data-dir", str(data)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "ig_" not in done.stdout and not data.exists()


def printed_curl(output: str) -> str:
    """The curl command `serve` prints on first start, as printed (with its line breaks)."""
    match = re.search(r"^\s*(curl .*?\n\s*-d '.*?')\s*$", output, re.MULTILINE | re.DOTALL)
    assert match, output
    return match[1]


def test_the_printed_curl_example_generates_an_image(live_server: LiveServer) -> None:
    command = printed_curl("".join(live_server.output))
    assert live_server.admin_key in command and f"{live_server.url}/image/create" in command
    res = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    response = body["response"]
    assert "error" not in response, response
    (image,) = response["data"]
    # Weave's shape: the image is a Content reference whose bytes /file/content reads.
    png = httpx.post(
        f"{live_server.url}/file/content",
        json={"project_id": "admin/demo", "digest": image["b64_json"]["files"]["content"]},
        auth=("api", live_server.admin_key),
    )
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    call = httpx.post(
        f"{live_server.url}/call/read",
        json={"project_id": "admin/demo", "id": body["weave_call_id"]},
        auth=("api", live_server.admin_key),
    ).json()["call"]
    assert call["summary"]["weave"]["status"] == "success"


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
        # Another process revoked it: refused within the access cache's second.
        deadline = time.monotonic() + 1.0
        while True:
            gone = httpx.post(
                f"{server.url}/calls/query_stats",
                json={"project_id": "studio/p"},
                auth=("api", key),
            )
            if gone.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
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
        # A client's files are its user's, as umask 022 makes them (not the server's 0600).
        assert mode(path) == 0o644
    assert mode(out) == 0o755
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


MiB = 1024 * 1024
LIMIT = 4 * MiB  # the default max_request_bytes


def post_head(server: LiveServer, *headers: str) -> bytes:
    lines = [
        "POST /image/create HTTP/1.1",
        "Host: x",
        "Content-Type: application/json",
        f"Authorization: Bearer {server.admin_key}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes still queued: a reset, after its answer
    return received


def test_declared_oversized_body_is_refused_before_any_of_it_is_sent(
    live_server: LiveServer,
) -> None:
    """Headers only, declaring 20 MiB: the 413 comes without a byte of the body, and
    the server closes the connection instead of waiting for it."""
    with socket.create_connection(address(live_server), timeout=10) as sock:
        sock.sendall(post_head(live_server, f"Content-Length: {20 * MiB}"))
        reply = read_until_closed(sock)  # a timeout here: the server waited for the body
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"larger than the limit" in reply
    assert httpx.get(f"{live_server.url}/health").status_code == 200


def test_chunked_oversized_body_is_cut_off_at_the_limit(live_server: LiveServer) -> None:
    """No Content-Length: the client sends just past the limit and then nothing (not
    even the closing chunk). The 413 must come anyway, and the connection close."""
    chunk = b"x" * 65536
    with socket.create_connection(address(live_server), timeout=10) as sock:
        sock.sendall(post_head(live_server, "Transfer-Encoding: chunked"))
        try:
            for _ in range(LIMIT // len(chunk) + 1):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # already answered and closed: fine, the reply is read below
        reply = read_until_closed(sock)  # a timeout here: the server waited for more
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert httpx.get(f"{live_server.url}/health").status_code == 200


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)
