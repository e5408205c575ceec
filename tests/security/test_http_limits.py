"""Finding 3: HTTP-level limits on a real server — header size (431), timeouts for
headers, bodies, unread answers and idle keep-alive, and a cap on open connections."""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server

ENV = {
    "IMAGEGATE_HTTP_HEADER_TIMEOUT": "1",
    "IMAGEGATE_HTTP_BODY_TIMEOUT": "1",
    "IMAGEGATE_HTTP_SEND_TIMEOUT": "2",
    "IMAGEGATE_HTTP_KEEP_ALIVE_TIMEOUT": "1",
    "IMAGEGATE_HTTP_MAX_CONNECTIONS": "40",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("http") / "data", ENV)
    yield live
    stop_server(live)


def connect(server: LiveServer, rcvbuf: int | None = None) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.settimeout(10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes `sock` within `seconds`; and what it said first."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_oversized_headers_get_431(server: LiveServer) -> None:
    sock = connect(server)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused mid-way
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    closed, answer = closed_within(sock, 10)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert closed
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def test_headers_that_never_end_are_timed_out(server: LiveServer) -> None:
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
    closed, answer = closed_within(sock, 5)
    assert closed
    assert answer.startswith(b"HTTP/1.1 408")


def test_a_silent_connection_is_closed(server: LiveServer) -> None:
    closed, _ = closed_within(connect(server), 5)
    assert closed


def test_a_body_that_stops_is_timed_out(server: LiveServer) -> None:
    sock = connect(server)
    auth = base64.b64encode(f"api:{server.admin_key}".encode())
    sock.sendall(
        b"POST /call/read HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Basic " + auth + b'\r\nContent-Length: 100\r\n\r\n{"project_id"'
    )
    closed, answer = closed_within(sock, 6)
    assert closed
    assert answer.startswith(b"HTTP/1.1 408")


def test_idle_keep_alive_is_closed(server: LiveServer) -> None:
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    closed, answer = closed_within(sock, 3)  # configured: 1 s (uvicorn's default is 5)
    assert answer.startswith(b"HTTP/1.1 200")
    assert closed


def test_a_client_that_stops_reading_is_dropped(server: LiveServer) -> None:
    auth = ("api", server.admin_key)
    data = bytes(range(256)) * (32 * 1024)  # 8 MiB
    res = httpx.post(
        f"{server.url}/file/create",
        auth=auth,
        data={"project_id": "admin/big"},
        files={"file": ("f", data)},
        timeout=60,
    )
    assert res.status_code == 200, res.text
    body = b'{"project_id": "admin/big", "digest": "%s"}' % res.json()["digest"].encode()
    sock = connect(server, rcvbuf=4096)
    sock.sendall(
        b"POST /file/content HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Basic " + base64.b64encode(f"api:{server.admin_key}".encode())
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip
    time.sleep(6)  # not reading: the server's send buffer fills and stays full
    _, received = closed_within(sock, 10)
    assert len(received) < len(data)  # the server gave up on this reader


def test_connections_past_the_cap_are_closed(server: LiveServer) -> None:
    idle = [connect(server) for _ in range(40)]
    try:
        closed, _ = closed_within(connect(server), 0.5)
        assert closed  # the 41st: refused right away, not after the header timeout
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
