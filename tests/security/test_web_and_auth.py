"""Findings 4, 5, 7 and 8: work before authentication, image bombs, sessions revocable on
the server, and CSRF through cached Basic credentials."""

from __future__ import annotations

import io
import socket
import time

import httpx
from fastapi import FastAPI
from PIL import Image

from tests.conftest import LiveServer, Users, basic
from tests.web.conftest import csrf_of, sign_in


def browser(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


# --- 7: sign-out ends the session everywhere ------------------------------------------


async def test_sign_out_ends_every_copy_of_the_session(app: FastAPI, users: Users) -> None:
    async with browser(app) as mine, browser(app) as thief:
        await sign_in(mine, users.alice)
        copied = mine.cookies["ig_session"]
        thief.cookies.set("ig_session", copied, path="/ui")
        assert (await thief.get("/ui/projects")).status_code == 200
        token = csrf_of((await mine.get("/ui/projects")).text)
        res = await mine.post("/ui/signout", data={"csrf_token": token})
        assert res.status_code == 303
        res = await thief.get("/ui/projects")
        assert res.status_code == 303 and res.headers["location"].startswith("/ui/signin")


# --- 8: no CSRF through cached Basic credentials -----------------------------------------


def upload(client: httpx.AsyncClient, key: str, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/file/create",
        data={"project_id": "alice/csrf"},
        files={"file": ("f.txt", b"planted by another site")},
        headers={**basic(key), **headers},
    )


async def test_cross_site_browser_requests_with_basic_are_refused(
    client: httpx.AsyncClient, users: Users
) -> None:
    res = await upload(client, users.alice, **{"Sec-Fetch-Site": "cross-site"})
    assert res.status_code == 403, res.text
    res = await upload(client, users.alice, **{"Sec-Fetch-Site": "same-site"})
    assert res.status_code == 403, res.text
    res = await upload(client, users.alice, Origin="http://evil.example")  # older browsers
    assert res.status_code == 403, res.text
    body = {"project_id": "alice/csrf", "inputs": {"model": "local/procedural", "prompt": "x"}}
    res = await client.post(
        "/image/create",
        json=body,
        headers={**basic(users.alice), "Sec-Fetch-Site": "cross-site"},
    )
    assert res.status_code == 403
    stats = await client.post(
        "/calls/query_stats", json={"project_id": "alice/csrf"}, headers=basic(users.alice)
    )
    assert stats.json()["count"] == 0


async def test_api_clients_and_same_origin_keep_working(
    client: httpx.AsyncClient, users: Users
) -> None:
    assert (await upload(client, users.alice)).status_code == 200  # curl, SDKs, Weave
    res = await upload(client, users.alice, **{"Sec-Fetch-Site": "same-origin"})
    assert res.status_code == 200
    res = await upload(client, users.alice, Origin="http://testserver")
    assert res.status_code == 200


async def test_browsers_are_not_invited_to_cache_basic_credentials(
    client: httpx.AsyncClient,
) -> None:
    res = await client.get(
        "/server_info", headers={"User-Agent": "Mozilla/5.0", "Sec-Fetch-Mode": "navigate"}
    )
    assert res.status_code == 401
    assert not res.headers["www-authenticate"].lower().startswith("basic")
    res = await client.get("/server_info", headers={"User-Agent": "curl/8.5.0"})
    assert res.headers["www-authenticate"].startswith("Basic")  # for HTTP clients as before


# --- 4: no work before authentication ----------------------------------------------------


def test_upload_without_a_key_is_refused_before_its_body(live_server: LiveServer) -> None:
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /file/create HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 60000000\r\n\r\n--b\r\n"
        )  # 60 MB announced, none of it sent: the answer must not wait for it
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.1 401")


def test_sign_in_form_is_capped_before_parsing(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as web:
        page = web.get("/ui/signin")
        started = time.monotonic()
        res = web.post(
            "/ui/signin",
            content=b"csrf_token=x&" + b"a=b&" * (1 << 18),  # 1 MiB of fields
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert page.status_code == 200
        assert res.status_code == 413, res.status_code
        assert time.monotonic() - started < 2


async def test_form_without_the_csrf_cookie_is_refused_unread(client: httpx.AsyncClient) -> None:
    res = await client.post("/ui/signin", data={"csrf_token": "x", "api_key": "y"})
    assert res.status_code == 403


# --- 5: image bombs ----------------------------------------------------------------------


async def test_thumbnail_of_a_decompression_bomb_is_refused(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    out = io.BytesIO()
    Image.new("1", (8000, 8000)).save(out, "PNG")  # 64 megapixels in a few KB
    res = await client.post(
        "/file/create",
        data={"project_id": "alice/bomb"},
        files={"file": ("bomb.png", out.getvalue())},
        headers=basic(users.alice),
    )
    assert res.status_code == 200, res.text
    digest = res.json()["digest"]
    async with browser(app) as web:
        await sign_in(web, users.alice)
        res = await web.get(f"/ui/thumb/alice/bomb/{digest}.webp")
    assert res.status_code == 422
    assert "8000x8000" in res.text


async def test_ordinary_images_still_get_thumbnails(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), "red").save(out, "PNG")
    res = await client.post(
        "/file/create",
        data={"project_id": "alice/ok"},
        files={"file": ("ok.png", out.getvalue())},
        headers=basic(users.alice),
    )
    digest = res.json()["digest"]
    async with browser(app) as web:
        await sign_in(web, users.alice)
        res = await web.get(f"/ui/thumb/alice/ok/{digest}.webp")
    assert res.status_code == 200
    assert res.headers["content-type"] == "image/webp"
