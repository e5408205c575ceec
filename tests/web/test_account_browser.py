"""API keys, budgets, /docs offline and the phone layout, in a real headless Chromium
against a real `imagegate serve`. Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.conftest import LiveServer, start_server, stop_server
from tests.web.test_browser import api_generate, browser, screenshot, sign_in  # noqa: F401

PRICE = 0.04  # per 256x256 image of local/procedural on this server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("account")
    models = root / "models.toml"
    # Priced here, so a budget has something to count.
    models.write_text(f'[models."local/procedural".prices.per_image]\n"-:256x256" = {PRICE}\n')
    live = start_server(root / "data", args=["--models", str(models)])
    assert live.admin_key
    yield live
    stop_server(live)


def new_context(browser, width: int = 1280, height: int = 900) -> BrowserContext:  # noqa: F811
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.set_default_timeout(30_000)
    return ctx


def watch(page: Page, server: LiveServer) -> tuple[list[str], list[str]]:
    """(errors, requests to anywhere but the server) seen by the page."""
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on(
        "request",
        lambda req: (
            None if req.url.startswith((server.url, "data:", "blob:")) else outside.append(req.url)
        ),
    )
    return errors, outside


def test_api_keys_page_shows_a_new_key_once(server: LiveServer, browser) -> None:  # noqa: F811
    ctx = new_context(browser)
    page = ctx.new_page()
    errors, outside = watch(page, server)
    sign_in(page, server)
    page.click("header >> text=API keys")
    expect(page).to_have_url(f"{server.url}/ui/keys")
    expect(page.locator("table.keys tbody tr")).to_have_count(1)
    expect(page.locator(".tag")).to_have_text("this browser")
    page.click("text=New key")
    key = page.locator("input.keyvalue").input_value()
    assert key.startswith("ig_") and len(key) > 40
    expect(page.locator("table.keys tbody tr")).to_have_count(2)
    screenshot(page, "api-keys.png", full_page=True)
    # The key works, and the page never shows it again: only its prefix.
    assert httpx.get(f"{server.url}/keys", auth=("api", key)).status_code == 200
    page.goto(f"{server.url}/ui/keys")
    assert key not in page.content() and key[:9] in page.content()
    # Revoking it here revokes it everywhere.
    row = page.locator("table.keys tbody tr", has_text=key[:9])
    row.locator("button:has-text('Revoke')").click()
    expect(page.locator("table.keys tbody tr", has_text=key[:9])).to_contain_text("revoked")
    assert httpx.get(f"{server.url}/keys", auth=("api", key)).status_code == 401
    assert errors == [] and outside == []
    ctx.close()


def test_budget_and_spend_on_the_project_page(server: LiveServer, browser) -> None:  # noqa: F811
    auth = ("api", server.admin_key)
    res = httpx.put(
        f"{server.url}/projects/admin/budgeted/budget",
        json={"period": "monthly", "limit_usd": 0.1, "hard": True},
        auth=auth,
    )
    assert res.status_code == 200, res.text
    for i in range(2):
        api_generate(server, "admin/budgeted", f"a green heron {i}", size="256x256")
    refused = httpx.post(
        f"{server.url}/image/create",
        json={
            "project_id": "admin/budgeted",
            "inputs": {"model": "local/procedural", "prompt": "one more", "size": "256x256"},
        },
        auth=auth,
    )
    assert refused.status_code == 402 and refused.json()["error_type"] == "budget_exceeded"
    ctx = new_context(browser)
    page = ctx.new_page()
    errors, outside = watch(page, server)
    sign_in(page, server)
    page.goto(f"{server.url}/ui/p/admin/budgeted")
    budget = page.locator(".budget")
    expect(budget).to_contain_text("Project budget · monthly · hard")
    expect(budget).to_contain_text("$0.08 of $0.10")
    screenshot(page, "project-budget.png", full_page=True)
    # The owner changes it on the page.
    page.click("text=Change project budget")
    page.fill("input[name=limit_usd]", "0.5")
    page.click(".budgetform button:has-text('Save')")
    expect(page.locator(".budget")).to_contain_text("$0.08 of $0.50")
    assert errors == [] and outside == []
    ctx.close()


def test_docs_render_offline(server: LiveServer, browser) -> None:  # noqa: F811
    ctx = new_context(browser)
    page = ctx.new_page()
    errors, outside = watch(page, server)
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("imagegate")
    expect(page.locator(".opblock-summary-path", has_text="/image/create").first).to_be_visible()
    assert "Unable to render this definition" not in page.content()
    icon = page.locator("link[rel~=icon]").first.get_attribute("href")
    assert icon and icon.startswith("/docs/assets/")
    screenshot(page, "docs-offline.png")
    assert httpx.get(f"{server.url}/redoc").status_code == 404  # ReDoc would load a CDN logo
    assert outside == [], outside
    assert errors == [], errors
    ctx.close()


def test_phone_width_breadcrumb_and_uniform_cards(server: LiveServer, browser) -> None:  # noqa: F811
    for size in ("256x512", "512x256", "256x256"):  # portrait, landscape, square
        api_generate(server, "admin/a-rather-long-project-name-for-phones", f"a {size} owl", size)
    ctx = new_context(browser, width=390, height=844)
    page = ctx.new_page()
    errors, _ = watch(page, server)
    sign_in(page, server)
    page.goto(f"{server.url}/ui/p/admin/a-rather-long-project-name-for-phones")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth)"
    )
    crumb = page.locator("nav.crumbs > span").last
    box = crumb.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    # The whole name is visible: not clipped by its box or by the page.
    assert crumb.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    heights = {round(c.bounding_box()["height"]) for c in page.locator(".card").all()}
    thumbs = {round(t.bounding_box()["height"]) for t in page.locator(".card .thumb").all()}
    assert len(thumbs) == 1, thumbs
    assert len(heights) == 1, heights
    screenshot(page, "gallery-phone.png", full_page=True)
    assert errors == []
    ctx.close()
