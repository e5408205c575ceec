"""What the gallery's pages show: projects, the grid and its filters, a generation's
detail, the generate form, and images and thumbnails."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from imagegate.core import Imagegate
from imagegate.store.tables import calls
from imagegate.web import thumbs
from tests.conftest import Users
from tests.web.conftest import Client, Generate, token_for

XSS = "<img src=x onerror=alert(1)>"
CARD = re.compile(r'data-call="([^"]+)"')


def card_ids(html: str) -> list[str]:
    return CARD.findall(html)


def digest_of(call: dict[str, Any], index: int = 0) -> str:
    return str(call["output"]["data"][index]["content"]["digest"])


async def set_summary(imagegate: Imagegate, call_id: str, **values: Any) -> None:
    """Adjust a stored call (costs, start time) as a newer service or an old call would."""
    async with imagegate.engine.begin() as conn:
        row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id))).one()
        summary = dict(row.summary or {})
        summary.update(values.pop("summary", {}))
        await conn.execute(
            calls.update().where(calls.c.id == call_id).values(summary=summary, **values)
        )


async def test_xss_prompt_is_text_on_every_page(
    browser_for: Client, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, "alice/demo", XSS)
    alice = await browser_for(users.alice)
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for path in (
        "/ui/p/alice/demo",
        "/ui/p/alice/demo/cards",
        f"/ui/p/alice/demo/calls/{call['id']}",
        f"/ui/p/alice/demo/generate?again={call['id']}",
        f"/ui/p/alice/demo?q={XSS}",  # echoed back in the search box
    ):
        res = await alice.get(path)
        assert res.status_code == 200, path
        assert XSS not in res.text, path
        assert escaped in res.text, path
    res = await alice.get(f"/ui/p/alice/demo/calls/{call['id']}.json")
    assert res.headers["content-type"] == "application/json"
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.json()["call"]["inputs"]["prompt"] == XSS


async def test_gallery_is_newest_first_and_pages_by_fifty(
    browser_for: Client, users: Users, generate: Generate, imagegate: Imagegate
) -> None:
    made = [await generate(users.alice, "alice/demo", f"red {i}") for i in range(53)]
    alice = await browser_for(users.alice)
    res = await alice.get("/ui/p/alice/demo")
    first = card_ids(res.text)
    assert first == [c["id"] for c in reversed(made)][:50]
    assert "53 generations" in res.text
    more = re.search(r'data-src="([^"]+)"', res.text)
    assert more
    rest = await alice.get(more[1].replace("&amp;", "&"))
    assert card_ids(rest.text) == [c["id"] for c in reversed(made)][50:]
    assert "data-more" not in rest.text
    # Without JavaScript the same link is a page of its own.
    page2 = await alice.get("/ui/p/alice/demo?offset=50")
    assert card_ids(page2.text) == card_ids(rest.text)


async def test_filters(
    browser_for: Client, users: Users, generate: Generate, imagegate: Imagegate
) -> None:
    fox = await generate(users.alice, "acme/zoo", "A Red FOX in the snow")
    owl = await generate(users.bob, "acme/zoo", "a teal owl")
    old = await generate(users.alice, "acme/zoo", "an old blue whale")
    await set_summary(imagegate, old["id"], started_at=datetime(2024, 3, 5, 12, tzinfo=UTC))
    failed = await generate(users.alice, "acme/zoo", "a broken fox", size="300x300")
    await set_summary(
        imagegate, failed["id"], exception="provider_error: boom", output=None,
        summary={"error": {"type": "provider_error", "status_code": 500}},
    )  # fmt: skip
    alice = await browser_for(users.alice)

    async def shown(query: str) -> set[str]:
        res = await alice.get(f"/ui/p/acme/zoo?{query}")
        assert res.status_code == 200, res.text
        return set(card_ids(res.text))

    assert await shown("") == {fox["id"], owl["id"], old["id"], failed["id"]}
    assert await shown("q=fox") == {fox["id"], failed["id"]}  # case-insensitive
    assert await shown("q=red+FOX") == {fox["id"]}
    assert await shown("status=error") == {failed["id"]}
    assert await shown("status=success&q=fox") == {fox["id"]}
    assert await shown("user=bob") == {owl["id"]}
    assert await shown("user=nobody") == set()
    assert await shown("model=local/procedural") == {c["id"] for c in (fox, owl, old, failed)}
    assert await shown("model=gpt-image-1") == set()
    assert await shown("from=2024-03-05&to=2024-03-05") == {old["id"]}
    assert await shown("to=2024-12-31") == {old["id"]}
    today = datetime.now(UTC).date()
    assert old["id"] not in await shown(f"from={today - timedelta(days=1)}")
    # The browser's zone decides where a day starts: 12:00 UTC is the 6th at UTC+13.
    assert await shown("from=2024-03-06&to=2024-03-06&tz=780") == {old["id"]}
    assert await shown("from=2024-03-06&to=2024-03-06") == set()
    res = await alice.get("/ui/p/acme/zoo?q=fox&status=error")
    assert "1 of 4 generations match" in res.text


async def test_projects_page_counts_activity_and_spend(
    browser_for: Client, users: Users, generate: Generate, imagegate: Imagegate
) -> None:
    a = await generate(users.alice, "acme/paid", "red")
    b = await generate(users.bob, "acme/paid", "blue")
    await generate(users.alice, "alice/free", "green")
    await generate(users.carol, "carol/secret", "grey")
    await set_summary(imagegate, a["id"], summary={"costs": {"gpt-image-1": {"total_cost": 0.042}}})
    await set_summary(
        imagegate,
        b["id"],
        summary={"costs": {"gpt-image-1": {"total_cost": 1.5}, "x": {"total_cost": None}}},
    )
    alice = await browser_for(users.alice)
    res = await alice.get("/ui/projects")
    html = res.text
    assert "carol/secret" not in html and "/ui/p/carol" not in html
    paid = html.index('href="/ui/p/acme/paid"')
    free = html.index('href="/ui/p/alice/free"')
    assert free < paid  # most recent activity first
    section = html[paid : paid + 2000]
    assert re.search(r'class="count">2<', section)
    assert "$1.54" in section
    assert "$0<" in html[free : free + 2000]
    assert "just now" in section


async def test_detail_page(browser_for: Client, users: Users, generate: Generate) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox", n=2, seed=7, size="320x256")
    alice = await browser_for(users.alice)
    res = await alice.get(f"/ui/p/alice/demo/calls/{call['id']}")
    html = res.text
    for index in range(2):
        digest = digest_of(call, index)
        assert f'src="/ui/img/alice/demo/{digest}.png"' in html
        assert f'href="/ui/img/alice/demo/{digest}.png?download=1" download' in html
    assert 'width="320" height="256"' in html
    assert "local/procedural" in html and "alice" in html
    assert ">seed</dt><dd>7<" in html and ">size</dt><dd>320x256<" in html
    assert f'href="/ui/p/alice/demo/calls/{call["id"]}.json"' in html
    assert f'href="/ui/p/alice/demo/generate?again={call["id"]}"' in html


async def test_detail_shows_cost(
    browser_for: Client, users: Users, generate: Generate, imagegate: Imagegate
) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox")
    alice = await browser_for(users.alice)
    path = f"/ui/p/alice/demo/calls/{call['id']}"
    await set_summary(imagegate, call["id"], summary={"costs": {"m": {"total_cost": 0.042}}})
    assert 'class="cost">$0.04<' in (await alice.get(path)).text
    await set_summary(imagegate, call["id"], summary={"costs": None})  # before costs existed
    assert 'class="cost">not priced<' in (await alice.get(path)).text


async def test_detail_of_a_failure(
    browser_for: Client, users: Users, generate: Generate, imagegate: Imagegate
) -> None:
    """Escaping of what a provider said. (Attempts as the service records them, from
    real retries: tests/web/test_retries_page.py.)"""
    call = await generate(users.alice, "alice/demo", "doomed")
    await set_summary(
        imagegate,
        call["id"],
        exception="provider_error: the upstream said <no>",
        output=None,
        summary={
            "error": {"type": "provider_error", "status_code": 502},
            "errors": [{"error": "moderation <blocked>", "error_type": "content_policy"}],
        },
    )
    alice = await browser_for(users.alice)
    html = (await alice.get(f"/ui/p/alice/demo/calls/{call['id']}")).text
    assert "provider_error" in html and "(HTTP 502)" in html
    assert "the upstream said &lt;no&gt;" in html
    assert "This generation failed" in html
    assert "moderation &lt;blocked&gt;" in html
    grid = (await alice.get("/ui/p/alice/demo")).text
    assert "Failed" in grid


async def test_detail_of_missing_call_is_404(browser_for: Client, users: Users) -> None:
    alice = await browser_for(users.alice)
    assert (await alice.get("/ui/p/alice/demo/calls/nope")).status_code == 404


async def test_image_download_matches_file_content(
    browser_for: Client, client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox")
    digest = digest_of(call)
    alice = await browser_for(users.alice)
    inline = await alice.get(f"/ui/img/alice/demo/{digest}.png")
    download = await alice.get(f"/ui/img/alice/demo/{digest}.png?download=1")
    api = await client.post(
        "/file/content",
        json={"project_id": "alice/demo", "digest": digest},
        auth=("api", users.alice),
    )
    assert inline.content == download.content == api.content
    for res in (inline, download):
        assert res.headers["content-type"] == "image/png"
        assert res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["cache-control"].startswith("private")
    assert download.headers["content-disposition"].startswith("attachment;")
    assert inline.headers["content-disposition"].startswith("inline;")


async def test_only_images_are_served(
    browser_for: Client, client: httpx.AsyncClient, users: Users
) -> None:
    # Any bytes can be uploaded through /file/create: the gallery never serves them as
    # a page (HTML by digest would run as this site).
    html = b"<html><script>alert(1)</script></html>"
    res = await client.post(
        "/file/create",
        data={"project_id": "alice/demo"},
        files={"file": ("x.html", html)},
        auth=("api", users.alice),
    )
    digest = res.json()["digest"]
    alice = await browser_for(users.alice)
    for path in (f"/ui/img/alice/demo/{digest}.png", f"/ui/thumb/alice/demo/{digest}.webp"):
        res = await alice.get(path)
        assert res.status_code == 404 and b"<script>" not in res.content


async def test_thumbnails_are_made_once_and_cached(
    browser_for: Client,
    users: Users,
    generate: Generate,
    imagegate: Imagegate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox", size="1024x768")
    digest = digest_of(call)
    made: list[int] = []
    real = thumbs.render_thumbnail
    monkeypatch.setattr(thumbs, "render_thumbnail", lambda data: made.append(1) or real(data))
    alice = await browser_for(users.alice)
    first = await alice.get(f"/ui/thumb/alice/demo/{digest}.webp")
    second = await alice.get(f"/ui/thumb/alice/demo/{digest}.webp")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and len(made) == 1
    assert first.headers["content-type"] == "image/webp"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["cache-control"].startswith("private, max-age=")
    cached = imagegate.settings.data_dir / "cache" / "thumbs" / "alice" / "demo"
    assert [p.name for p in cached.rglob("*.webp")] == [f"{digest}.webp"]
    with Image.open(cached / digest[:2] / f"{digest}.webp") as img:
        assert img.format == "WEBP" and img.size == (256, 192)
    assert len(first.content) < 20_000


async def test_concurrent_requests_share_one_thumbnail_rendering(
    users: Users, generate: Generate, imagegate: Imagegate, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = await generate(users.alice, "alice/demo", "a red fox")
    made: list[int] = []
    real = thumbs.render_thumbnail
    monkeypatch.setattr(thumbs, "render_thumbnail", lambda data: made.append(1) or real(data))
    cache = thumbs.ThumbnailCache(imagegate.settings.data_dir / "thumbs-test")
    digest = digest_of(call)

    async def load() -> bytes | None:
        return await imagegate.files.get("alice/demo", digest)

    results = await asyncio.gather(*(cache.get("alice/demo", digest, load) for _ in range(5)))
    assert len(made) == 1 and len(set(results)) == 1 and results[0]
    assert await cache.get("alice/demo", digest, load) == results[0]
    assert len(made) == 1


async def test_generate_form_offers_each_models_own_parameters(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    alice = await browser_for(users.alice)
    imagegate.generation.environ = {}  # no server-wide provider keys
    bare = (await alice.get("/ui/p/alice/demo/generate")).text
    offered = set(re.findall(r'<option value="([^"]+)"', bare.split('id="model"', 1)[1]))
    # Only what can be used without a key: models needing one nobody set are not offered.
    assert "local/procedural" in offered and "gpt-image-2" not in offered
    await imagegate.secrets.set("alice", "OPENAI_API_KEY", "sk-alice-0123456789")
    html = (await alice.get("/ui/p/alice/demo/generate")).text
    servable = [
        name
        for name in imagegate.catalog.names
        if (spec := imagegate.catalog.get(name))
        and spec.provider in imagegate.providers
        and spec.describe().get("state") != "shut_down"
    ]
    assert "local/procedural" in servable
    for name in servable:
        spec = imagegate.catalog.get(name)
        assert spec is not None
        assert f'<option value="{name}"' in html
        start = html.index(f'data-model="{name}"')
        fieldset = html[start : html.index("</fieldset>", start)]
        shown = set(re.findall(r'name="([a-z_]+)"', fieldset))
        # Hidden: how API answers come back, streaming (the form's own choice), `svg`,
        # and what only edits take.
        hidden = {"response_format", "stream", "svg", "markup", "input_fidelity"}
        assert shown == set(spec.params) - hidden, name
        for param, values in (spec.describe().get("options") or {}).items():
            for value in values:
                assert f'<option value="{value}"' in fieldset, (name, param, value)
    for name in set(imagegate.catalog.names) - set(servable):
        assert f'<option value="{name}"' not in html  # retired or without a provider
    # Only the chosen model's fieldset is live; the others are hidden and disabled.
    assert html.count("hidden disabled>") == len(servable) - 1


async def test_generate_from_the_form(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    alice = await browser_for(users.alice)
    token = await token_for(alice, "/ui/p/alice/new/generate")
    res = await alice.post(
        "/ui/p/alice/new/generate",
        data={
            "csrf_token": token,
            "model": "local/procedural",
            "prompt": "a red fox",
            "n": "2",
            "size": "256x256",
            "seed": "42",
            "response_format": "url",  # not a form field: ignored
        },
    )
    assert res.status_code == 303
    call_id = res.headers["location"].rsplit("/", 1)[1]
    call = await imagegate.calls.read("alice/new", call_id)
    assert call is not None
    assert (
        call["inputs"] | {"prompt": "a red fox", "n": 2, "size": "256x256", "seed": 42}
        == (call["inputs"])
    )
    assert call["inputs"]["response_format"] == "b64_json"
    assert len(call["output"]["data"]) == 2
    # "Generate again" fills the form with the same effective inputs, seed included.
    again = (await alice.get(f"/ui/p/alice/new/generate?again={call_id}")).text
    assert ">a red fox</textarea>" in again
    assert 'value="42"' in again and 'value="256x256"' in again and 'name="n"' in again
    assert re.search(r'name="n" type="number" min="1" max="10" value="2"', again)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "   "}, "prompt must not be empty"),
        ({"n": "11"}, "n must be between 1 and 10"),
        ({"n": "two"}, "n must be a whole number"),
        ({"size": "12x12"}, "each side of size must be between 256 and 2048"),
        ({"seed": "-3"}, "seed"),
        ({"model": "no/such-model"}, "unknown model"),
    ],
)
async def test_generate_shows_validation_errors(
    browser_for: Client,
    users: Users,
    imagegate: Imagegate,
    fields: dict[str, str],
    message: str,
) -> None:
    alice = await browser_for(users.alice)
    token = await token_for(alice, "/ui/p/alice/demo/generate")
    data = {"csrf_token": token, "model": "local/procedural", "prompt": "ok <b>", "n": "1"}
    res = await alice.post("/ui/p/alice/demo/generate", data=data | fields)
    assert res.status_code == 422
    assert message in res.text
    assert 'role="alert" data-error>' in res.text  # shown, on the form
    if "prompt" not in fields:
        assert ">ok &lt;b&gt;</textarea>" in res.text  # what was typed is kept
    res = await alice.post(
        "/ui/p/alice/demo/generate", data=data | fields, headers={"Accept": "application/json"}
    )
    assert res.status_code == 422 and message in res.json()["error"]
    assert (await imagegate.calls.count("alice/demo"))[0] == 0


async def test_new_project_form_creates_the_project(browser_for: Client, users: Users) -> None:
    alice = await browser_for(users.alice)
    token = await token_for(alice)
    res = await alice.post(
        "/ui/new", data={"csrf_token": token, "entity": "acme", "name": "posters"}
    )
    assert res.status_code == 303
    assert res.headers["location"] == "/ui/p/acme/posters"
    projects = await alice.get("/ui/projects")
    assert "posters" in projects.text  # it exists before anything is generated
    assert (await alice.get("/ui/p/acme/posters")).status_code == 200
    bad = await alice.post("/ui/new", data={"csrf_token": token, "entity": "acme", "name": "../x"})
    assert bad.status_code == 400
    forged = await alice.post("/ui/new", data={"csrf_token": "x", "entity": "acme", "name": "y"})
    assert forged.status_code == 403
    res = await alice.get("/ui/new?entity=acme&name=posters")  # old links still work
    assert res.headers["location"] == "/ui/p/acme/posters/generate"
