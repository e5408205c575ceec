"""Who may see what in the web gallery: sessions, cookies, CSRF, membership."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from imagegate.core import Imagegate
from imagegate.store.accounts import hash_key
from tests.conftest import Users
from tests.web.conftest import Client, Generate, csrf_of, sign_in, token_for

PAGES = [
    "/",
    "/ui",
    "/ui/",
    "/ui/projects",
    "/ui/p/alice/demo",
    "/ui/p/alice/demo/generate",
    "/ui/p/alice/demo/calls/{call}",
    "/ui/new?entity=alice&name=x",
]
RESOURCES = [
    "/ui/img/alice/demo/{digest}.png",
    "/ui/img/alice/demo/{digest}.png?download=1",
    "/ui/thumb/alice/demo/{digest}.webp",
    "/ui/p/alice/demo/calls/{call}.json",
    "/ui/p/alice/demo/cards?offset=50",
]


def cookie_header(res: httpx.Response, name: str) -> str:
    found = [v for v in res.headers.get_list("set-cookie") if v.startswith(f"{name}=")]
    assert len(found) == 1, res.headers.get_list("set-cookie")
    return found[0]


async def test_pages_redirect_to_sign_in_without_a_session(
    client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox")
    for page in PAGES:
        res = await client.get(page.format(call=call["id"]), follow_redirects=True)
        assert res.status_code == 200, page
        assert res.url.path == "/ui/signin", page
        assert "a red fox" not in res.text
    res = await client.get("/ui/p/alice/demo?q=fox")
    assert res.status_code == 303
    assert res.headers["location"] == "/ui/signin?next=/ui/p/alice/demo%3Fq%3Dfox"
    # A form posted after the session ended goes to the sign-in page too; a script's
    # fetch() gets a status it can explain.
    data = {"model": "local/procedural", "prompt": "x"}
    res = await client.post("/ui/p/alice/demo/generate", data=data, headers={"Accept": "text/html"})
    assert res.status_code == 303
    assert res.headers["location"] == "/ui/signin?next=/ui/p/alice/demo/generate"
    res = await client.post(
        "/ui/p/alice/demo/generate", data=data, headers={"Accept": "application/json"}
    )
    assert res.status_code == 401


async def test_images_and_data_need_a_session(
    client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox")
    digest = call["output"]["data"][0]["content"]["digest"]
    for path in RESOURCES:
        res = await client.get(path.format(call=call["id"], digest=digest))
        assert res.status_code == 401, path
        assert b"\x89PNG" not in res.content and b"RIFF" not in res.content


async def test_an_api_key_header_is_no_session(
    client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox")
    digest = call["output"]["data"][0]["content"]["digest"]
    res = await client.get(f"/ui/img/alice/demo/{digest}.png", auth=("api", users.alice))
    assert res.status_code == 401


async def test_non_members_see_nothing_of_another_team(
    browser_for: Client, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, "acme/shared", "a red fox")
    digest = call["output"]["data"][0]["content"]["digest"]
    paths = [
        "/ui/p/acme/shared",
        "/ui/p/acme/shared/generate",
        f"/ui/p/acme/shared/calls/{call['id']}",
        f"/ui/p/acme/shared/calls/{call['id']}.json",
        "/ui/p/acme/shared/cards",
        f"/ui/img/acme/shared/{digest}.png",
        f"/ui/thumb/acme/shared/{digest}.webp",
        "/ui/p/acme/no-such-project",
        "/ui/new?entity=acme&name=x",
    ]
    carol = await browser_for(users.carol)
    for path in paths:
        res = await carol.get(path)
        assert res.status_code == 404, path
        assert "a red fox" not in res.text and b"\x89PNG" not in res.content
    projects = await carol.get("/ui/projects")
    assert "acme" not in projects.text
    # Nor can she generate into it.
    token = await token_for(carol)
    res = await carol.post(
        "/ui/p/acme/shared/generate",
        data={"csrf_token": token, "model": "local/procedural", "prompt": "mine now"},
    )
    assert res.status_code == 404
    # bob is in acme: the same paths work for him.
    bob = await browser_for(users.bob)
    for path in paths[:7]:
        assert (await bob.get(path)).status_code == 200, path


async def test_session_cookie_flags_over_http(client: httpx.AsyncClient, users: Users) -> None:
    res = await sign_in(client, users.alice)
    cookie = cookie_header(res, "ig_session")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie
    assert users.alice not in cookie  # the key itself is never in the cookie
    assert hash_key(users.alice) not in cookie  # a random token; the server keeps the session


async def test_session_cookie_is_secure_over_https(app: FastAPI, users: Users) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        res = await sign_in(client, users.alice)
        assert "; Secure" in cookie_header(res, "ig_session")
        assert (await client.get("/ui/projects")).status_code == 200


async def test_secure_behind_a_tls_proxy(client: httpx.AsyncClient, users: Users) -> None:
    # The proxy speaks HTTPS to the browser and HTTP to imagegate.
    proxied = {"X-Forwarded-Proto": "https"}
    page = await client.get("/ui/signin", headers=proxied)
    nonce = cookie_header(page, "ig_csrf")
    assert "; Secure" in nonce and "HttpOnly" in nonce
    res = await client.post(
        "/ui/signin",
        data={"csrf_token": csrf_of(page.text), "api_key": users.alice},
        headers=proxied | {"Cookie": nonce.split(";")[0]},
    )
    assert res.status_code == 303
    assert "; Secure" in cookie_header(res, "ig_session")


async def test_wrong_key_does_not_sign_in(client: httpx.AsyncClient, users: Users) -> None:
    page = await client.get("/ui/signin")
    res = await client.post(
        "/ui/signin", data={"csrf_token": csrf_of(page.text), "api_key": users.alice + "x"}
    )
    assert res.status_code == 401
    assert "not valid" in res.text
    assert "ig_session" not in res.headers.get("set-cookie", "")


async def test_sign_out_clears_the_cookie(browser_for: Client, users: Users) -> None:
    alice = await browser_for(users.alice)
    token = await token_for(alice)
    res = await alice.post("/ui/signout", data={"csrf_token": token})
    assert res.status_code == 303 and res.headers["location"] == "/ui/signin"
    cookie = cookie_header(res, "ig_session")
    assert cookie.startswith('ig_session="";') and "Max-Age=0" in cookie
    assert (await alice.get("/ui/projects")).status_code == 303


async def test_a_revoked_key_ends_its_sessions(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    alice = await browser_for(users.alice)
    assert (await alice.get("/ui/projects")).status_code == 200
    assert await imagegate.accounts.revoke_key(users.alice)
    res = await alice.get("/ui/projects")
    assert res.status_code == 303 and res.headers["location"].startswith("/ui/signin")
    assert "Max-Age=0" in cookie_header(res, "ig_session")  # the stale cookie is dropped


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # end of the token
        lambda v: "0" + v[1:] if v[0] != "0" else "1" + v[1:],  # start of the token
        lambda v: v + "x",
        lambda v: "garbage",
    ],
)
async def test_tampered_session_cookies_are_refused(
    browser_for: Client, users: Users, tamper: object
) -> None:
    alice = await browser_for(users.alice)
    value = alice.cookies["ig_session"]
    alice.cookies.set("ig_session", tamper(value), path="/ui")  # type: ignore[operator]
    assert (await alice.get("/ui/projects")).status_code == 303


async def test_non_ascii_session_cookie_is_refused(
    browser_for: Client, client: httpx.AsyncClient, users: Users
) -> None:
    alice = await browser_for(users.alice)
    value = alice.cookies["ig_session"]
    raw = f"ig_session={value[:-1]}é".encode()  # a browser may send any bytes
    res = await client.get("/ui/projects", headers={"Cookie": raw})
    assert res.status_code == 303


async def test_every_post_needs_the_csrf_token(
    app: FastAPI, client: httpx.AsyncClient, browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    # Sign-in: no token, a wrong one, one from another browser.
    other = await client.get("/ui/signin")
    other_token = csrf_of(other.text)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as fresh:
        await fresh.get("/ui/signin")
        for token in (None, "forged", other_token):
            data = {"api_key": users.alice} | ({"csrf_token": token} if token else {})
            res = await fresh.post("/ui/signin", data=data)
            assert res.status_code == 403, token
            assert "ig_session" not in res.headers.get("set-cookie", "")

    alice = await browser_for(users.alice)
    good = await token_for(alice)
    bob = await browser_for(users.bob)
    bobs = await token_for(bob)
    for token in (None, "", "forged", bobs, good[:-1] + "é"):
        data = {"model": "local/procedural", "prompt": "csrf", "n": "1"}
        if token is not None:
            data["csrf_token"] = token
        res = await alice.post("/ui/p/alice/demo/generate", data=data)
        assert res.status_code == 403, token
        res = await alice.post("/ui/signout", data={"csrf_token": token or ""})
        assert res.status_code == 403, token
        assert "ig_session" not in res.headers.get("set-cookie", "")
    assert (await imagegate.calls.count("alice/demo"))[0] == 0
    assert (await alice.get("/ui/projects")).status_code == 200  # still signed in
    # The real token works, and is also accepted as a header (the page's fetch()).
    res = await alice.post(
        "/ui/p/alice/demo/generate",
        data={"model": "local/procedural", "prompt": "ok", "size": "256x256"},
        headers={"X-CSRF-Token": good, "Accept": "application/json"},
    )
    assert res.status_code == 200, res.text
    assert (await imagegate.calls.count("alice/demo"))[0] == 1


async def test_sign_in_follows_only_local_next(client: httpx.AsyncClient, users: Users) -> None:
    for target, expected in [
        ("/ui/p/alice/demo", "/ui/p/alice/demo"),
        ("https://evil.example/", "/ui/projects"),
        ("//evil.example/ui", "/ui/projects"),
        ("/api/elsewhere", "/ui/projects"),
    ]:
        client.cookies.clear()
        page = await client.get(f"/ui/signin?next={target}")
        assert f'name="next" value="{expected}"' in page.text
        res = await client.post(
            "/ui/signin",
            data={"csrf_token": csrf_of(page.text), "api_key": users.alice, "next": target},
        )
        assert res.headers["location"] == expected


async def test_pages_carry_protective_headers(browser_for: Client, users: Users) -> None:
    alice = await browser_for(users.alice)
    res = await alice.get("/ui/projects")
    assert "script-src 'self'" in res.headers["content-security-policy"]
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["cache-control"] == "no-store"
