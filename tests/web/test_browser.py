"""The gallery in a real headless Chromium (Debian's), driven by Playwright, against a real
`imagegate serve`. Screenshots go to test-artifacts/ at the repo root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import REPO, LiveServer, start_server, stop_server

CHROMIUM = Path(os.environ.get("IMAGEGATE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"


def ensure_chromium() -> None:
    """Debian's Chromium; Playwright's own browser downloads are never used."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(REPO / "scripts/deps/chromium.sh")], check=True, timeout=900)
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/deps/chromium.sh"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("web") / "data")
    assert live.admin_key
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_chromium()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    ctx.set_default_timeout(30_000)
    yield ctx
    ctx.close()


def screenshot(page: Page, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def sign_in(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/")  # the root leads to the gallery, which asks to sign in
    expect(page).to_have_url(f"{server.url}/ui/signin")
    page.fill("#api_key", server.admin_key)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{server.url}/ui/projects")


def generate_in_form(page: Page, prompt: str, n: int = 1, size: str = "256x256") -> str:
    """Fill the generate form, submit, wait for the detail page; the call id."""
    page.fill("#prompt", prompt)
    page.select_option("#model", "local/procedural")
    page.fill("#n", str(n))
    page.fill("fieldset[data-model='local/procedural'] input[name=size]", size)
    page.click("[data-submit]")
    page.wait_for_url("**/calls/*")
    return page.url.rsplit("/", 1)[1]


def api_generate(server: LiveServer, project_id: str, prompt: str, size: str = "512x512") -> None:
    res = httpx.post(
        f"{server.url}/image/create",
        auth=("api", server.admin_key),
        json={
            "project_id": project_id,
            "inputs": {"model": "local/procedural", "prompt": prompt, "size": size},
        },
        timeout=60,
    )
    assert res.status_code == 200 and res.json()["weave_call_id"], res.text


def test_generate_browse_filter_and_download(server: LiveServer, context: BrowserContext) -> None:
    for i in range(5):  # other generations to filter away
        api_generate(server, "admin/e2e", f"a teal owl number {i}")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors include Content-Security-Policy violations and failed loads.
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    sign_in(page, server)

    # A project from the projects page; the form shows the chosen model's options only.
    page.fill("input[name=name]", "e2e")
    page.click("form.newproject button")
    expect(page).to_have_url(f"{server.url}/ui/p/admin/e2e")  # created, empty
    page.click("a.btn.primary:has-text('Generate')")
    expect(page).to_have_url(f"{server.url}/ui/p/admin/e2e/generate")
    expect(page.locator("fieldset[data-model='local/procedural']")).to_be_visible()
    expect(page.locator("fieldset[data-model]:visible")).to_have_count(1)
    call_id = generate_in_form(page, "a red fox in a blue forest", n=2, size="320x256")

    # Detail page: both images, full size, with their facts.
    expect(page.locator("figure.image img")).to_have_count(2)
    expect(page.locator("h1.prompt")).to_have_text("a red fox in a blue forest")
    expect(page.locator(".status")).to_have_text("success")
    for img in page.locator("figure.image img").all():
        expect(img).to_have_js_property("naturalWidth", 320)

    # The gallery: the new thumbnail is there, first, and actually loads.
    page.click("nav.crumbs >> text=admin / e2e")
    expect(page).to_have_url(f"{server.url}/ui/p/admin/e2e")
    first = page.locator(".card").first
    expect(first).to_have_attribute("data-call", call_id)
    thumb = first.locator("img")
    expect(thumb).to_have_js_property("complete", True)
    assert thumb.evaluate("img => img.naturalWidth") == 256
    expect(page.locator(".card")).to_have_count(6)
    page.evaluate("document.querySelectorAll('.card img').forEach(i => i.loading = 'eager')")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth)"
    )
    screenshot(page, "web-gallery.png")

    # Filter to it: search text (submitted with Enter), then a select applies by itself.
    page.fill("input[name=q]", "RED FOX")
    page.press("input[name=q]", "Enter")
    expect(page.locator(".card")).to_have_count(1)
    expect(page.locator(".card").first).to_have_attribute("data-call", call_id)
    expect(page.locator("#counts")).to_have_text("1 of 6 generations match")
    page.select_option("select[name=status]", "error")
    expect(page.locator(".card")).to_have_count(0)
    expect(page.get_by_text("Nothing matches")).to_be_visible()
    page.select_option("select[name=status]", "success")
    expect(page.locator(".card")).to_have_count(1)

    # Open it; download an image and compare with the API's bytes.
    page.locator(".card").first.click()
    expect(page).to_have_url(f"{server.url}/ui/p/admin/e2e/calls/{call_id}")
    expect(page.locator("figure.image img").first).to_have_js_property("complete", True)
    screenshot(page, "web-detail.png")
    with page.expect_download() as info:
        page.locator("[data-download]").first.click()
    downloaded = Path(info.value.path()).read_bytes()
    call = httpx.post(
        f"{server.url}/call/read",
        auth=("api", server.admin_key),
        json={"project_id": "admin/e2e", "id": call_id},
    ).json()["call"]
    digest = call["output"]["data"][0]["content"]["digest"]
    api_bytes = httpx.post(
        f"{server.url}/file/content",
        auth=("api", server.admin_key),
        json={"project_id": "admin/e2e", "digest": digest},
    ).content
    assert downloaded == api_bytes and downloaded.startswith(b"\x89PNG")
    assert info.value.suggested_filename == f"e2e-{digest[:12]}.png"

    # Generate again: the same inputs, seed included, so the same images.
    page.click("text=Generate again")
    expect(page.locator("#prompt")).to_have_value("a red fox in a blue forest")
    expect(page.locator("input[name=seed]:enabled")).to_have_value(str(call["inputs"]["seed"]))
    page.click("[data-submit]")
    page.wait_for_url(lambda url: "/calls/" in url and call_id not in url)
    srcs = page.locator("figure.image img").evaluate_all("els => els.map(e => e.src)")
    digests = [src.rsplit("/", 1)[1].split(".")[0] for src in srcs]
    assert digests == [item["content"]["digest"] for item in call["output"]["data"]]
    assert errors == []


def test_infinite_scroll(server: LiveServer, context: BrowserContext) -> None:
    for i in range(57):
        api_generate(server, "admin/many", f"grey pebble {i}", size="256x256")
    page = context.new_page()
    sign_in(page, server)
    page.goto(f"{server.url}/ui/p/admin/many")
    expect(page.locator(".card")).to_have_count(50)
    expect(page.locator(".card .prompt").first).to_have_text("grey pebble 56")
    page.locator("[data-more]").scroll_into_view_if_needed()
    expect(page.locator(".card")).to_have_count(57)
    expect(page.locator(".card .prompt").last).to_have_text("grey pebble 0")
    expect(page.locator("[data-more]")).to_have_count(0)
    assert page.url == f"{server.url}/ui/p/admin/many"  # appended in place, no navigation


def test_xss_prompt_renders_as_text(server: LiveServer, context: BrowserContext) -> None:
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, server)
    page.goto(f"{server.url}/ui/p/admin/xss/generate")
    generate_in_form(page, XSS)
    expect(page.locator("h1.prompt")).to_have_text(XSS)
    assert page.locator("img[src='x']").count() == 0
    page.goto(f"{server.url}/ui/p/admin/xss")
    expect(page.locator(".card .prompt").first).to_have_text(XSS)
    assert page.locator("img[src='x']").count() == 0
    page.fill("input[name=q]", XSS)
    page.press("input[name=q]", "Enter")
    expect(page.locator("input[name=q]")).to_have_value(XSS)
    expect(page.locator(".card")).to_have_count(1)
    assert page.locator("img[src='x']").count() == 0
    assert dialogs == []


def test_validation_error_shows_on_the_form(server: LiveServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server)
    page.goto(f"{server.url}/ui/p/admin/e2e/generate")
    page.fill("#prompt", "too many")
    page.fill("#n", "11")
    # The browser's own check (max=10) would stop a real click; submit around it, as an
    # older browser or a stale form would, to see the server's message.
    page.evaluate("document.querySelector('#n').removeAttribute('max')")
    page.click("[data-submit]")
    expect(page.locator("[data-error]")).to_be_visible()
    expect(page.locator("[data-error]")).to_contain_text("n must be between 1 and 10")
    expect(page.locator("[data-submit]")).to_be_enabled()
    assert "/generate" in page.url


def test_sign_out(server: LiveServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server)
    page.click("text=Sign out")
    expect(page).to_have_url(f"{server.url}/ui/signin")
    assert not [c for c in context.cookies() if c["name"] == "ig_session"]
    page.goto(f"{server.url}/ui/projects")
    expect(page).to_have_url(f"{server.url}/ui/signin?next=/ui/projects")
