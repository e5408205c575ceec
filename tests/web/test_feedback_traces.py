"""Reactions, notes and deletes in the gallery, shared with the Weave API's feedback, and
the Traces page: all through HTTP, signed in as a browser would be."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from PIL import Image

from tests.conftest import Users, basic
from tests.web.conftest import Client, Generate, token_for

PROJECT = "acme/gallery"
BASE = f"/ui/p/{PROJECT}"
XSS = "<img src=x onerror=alert(1)>"
IMG = re.compile(r"/ui/img/acme/gallery/([A-Za-z0-9]{43})")


def pressed(html: str, emoji: str) -> tuple[str, str]:
    """(aria-pressed, count) of the first reaction button for `emoji` on a page."""
    match = re.search(
        rf'value="{emoji}" aria-pressed="(true|false)"[^>]*>{emoji} <span class="count">(\d+)<',
        html,
    )
    assert match, f"no {emoji} button"
    return match[1], match[2]


async def api(client: httpx.AsyncClient, key: str, path: str, body: Any) -> Any:
    res = await client.post(path, json=body, headers=basic(key))
    assert res.status_code == 200, res.text
    return res.json()


async def test_reactions_toggle_and_are_weave_feedback(
    browser_for: Client, client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, PROJECT, "a red fox")
    alice, bob = await browser_for(users.alice), await browser_for(users.bob)
    detail = f"{BASE}/calls/{call['id']}"

    async def react(browser: httpx.AsyncClient, emoji: str, next_: str = "") -> None:
        token = await token_for(browser, detail)
        res = await browser.post(
            f"{detail}/react", data={"csrf_token": token, "emoji": emoji, "next": next_}
        )
        assert res.status_code == 303
        assert res.headers["location"] == (next_ or detail)

    await react(alice, "👍", BASE)
    await react(bob, "👍")
    await react(bob, "👎")
    page = (await alice.get(detail)).text
    assert pressed(page, "👍") == ("true", "2") and pressed(page, "👎") == ("false", "1")
    card = (await alice.get(BASE)).text
    assert pressed(card, "👍") == ("true", "2")
    await react(alice, "👍")  # again: taken back
    assert pressed((await alice.get(detail)).text, "👍") == ("false", "1")

    # The same feedback the Weave SDK's call.feedback reads, on the call's ref.
    ref = f"weave:///{PROJECT}/call/{call['id']}"
    query = {"$expr": {"$eq": [{"$getField": "weave_ref"}, {"$literal": ref}]}}
    found = await api(
        client, users.alice, "/feedback/query", {"project_id": PROJECT, "query": query}
    )
    assert sorted((f["feedback_type"], f["payload"]["emoji"]) for f in found["result"]) == [
        ("wandb.reaction.1", "👍"),
        ("wandb.reaction.1", "👎"),
    ]
    bad = await alice.post(
        f"{detail}/react", data={"csrf_token": await token_for(alice, detail), "emoji": "💩"}
    )
    assert bad.status_code == 400


async def test_notes_from_the_sdk_and_the_page(
    browser_for: Client, client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, PROJECT, "a blue whale")
    detail = f"{BASE}/calls/{call['id']}"
    ref = f"weave:///{PROJECT}/call/{call['id']}"
    sdk_note = {"project_id": PROJECT, "weave_ref": ref, "feedback_type": "wandb.note.1",
                "payload": {"note": "from the SDK " + XSS}}  # fmt: skip
    await api(client, users.bob, "/feedback/create", sdk_note)

    alice = await browser_for(users.alice)
    token = await token_for(alice, detail)
    res = await alice.post(f"{detail}/notes", data={"csrf_token": token, "note": "needs more red"})
    assert res.status_code == 303 and res.headers["location"] == f"{detail}#notes"
    page = (await alice.get(detail)).text
    assert "needs more red" in page and "from the SDK &lt;img src=x" in page and XSS not in page
    assert re.search(r'needs more red</p>\s*<span class="muted small">alice', page)
    card = (await alice.get(BASE)).text
    assert '💬 <span class="count">2</span>' in card
    empty = await alice.post(f"{detail}/notes", data={"csrf_token": token, "note": "  "})
    assert empty.status_code == 400

    notes = re.findall(r'data-note="([^"]+)"', page)
    bobs = await api(client, users.alice, "/feedback/query", {"project_id": PROJECT})
    bob_note = next(
        f["id"] for f in bobs["result"] if f["payload"].get("note", "").startswith("from")
    )
    mine = next(n for n in notes if n != bob_note)
    # Only the author removes a note.
    res = await alice.post(f"{detail}/notes/{bob_note}/delete", data={"csrf_token": token})
    assert res.status_code == 404
    res = await alice.post(f"{detail}/notes/{mine}/delete", data={"csrf_token": token})
    assert res.status_code == 303
    page = (await alice.get(detail)).text
    assert "needs more red" not in page and "from the SDK" in page


async def test_delete_asks_first_then_hides_everything(
    browser_for: Client, client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, PROJECT, "a green hill")
    keep = await generate(users.alice, PROJECT, "a yellow sun")
    alice = await browser_for(users.alice)
    detail = f"{BASE}/calls/{call['id']}"
    page = (await alice.get(detail)).text
    [digest, *_] = IMG.findall(page)
    assert f'href="{detail}/delete"' in page

    confirm = await alice.get(f"{detail}/delete")
    assert confirm.status_code == 200
    assert "Delete this generation?" in confirm.text and "a green hill" in confirm.text
    assert (await alice.get(detail)).status_code == 200  # asking deletes nothing
    forged = await alice.post(f"{detail}/delete", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert (await alice.get(detail)).status_code == 200

    token = await token_for(alice, f"{detail}/delete")
    res = await alice.post(f"{detail}/delete", data={"csrf_token": token})
    assert res.status_code == 303 and res.headers["location"] == BASE
    assert (await alice.get(detail)).status_code == 404
    assert (await alice.get(f"/ui/img/{PROJECT}/{digest}.png")).status_code == 404
    gallery = (await alice.get(BASE)).text
    assert call["id"] not in gallery and keep["id"] in gallery
    read = await api(client, users.alice, "/call/read", {"project_id": PROJECT, "id": call["id"]})
    assert read == {"call": None}


async def test_non_members_cannot_react_note_or_delete(
    browser_for: Client, client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, PROJECT, "a private fox")
    carol = await browser_for(users.carol)
    token = await token_for(carol)
    detail = f"{BASE}/calls/{call['id']}"
    for path, data in (
        ("/react", {"emoji": "👍"}),
        ("/notes", {"note": "hi"}),
        ("/delete", {}),
    ):
        res = await carol.post(detail + path, data={"csrf_token": token, **data})
        assert res.status_code == 404, path
    assert (await carol.get(f"{detail}/delete")).status_code == 404
    assert (await carol.get(f"{BASE}/traces")).status_code == 404
    everything = await api(client, users.alice, "/feedback/query", {"project_id": PROJECT})
    assert everything["result"] == []
    read = await api(client, users.alice, "/call/read", {"project_id": PROJECT, "id": call["id"]})
    assert read["call"] is not None


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


async def upload(client: httpx.AsyncClient, key: str, data: bytes) -> str:
    res = await client.post(
        "/file/create",
        data={"project_id": PROJECT},
        files={"file": ("f", data)},
        headers=basic(key),
    )
    assert res.status_code == 200, res.text
    return str(res.json()["digest"])


async def test_traces_page_shows_trees_with_inline_images(
    browser_for: Client, client: httpx.AsyncClient, users: Users, generate: Generate
) -> None:
    pil = await upload(client, users.alice, png((255, 0, 0)))
    content = await upload(client, users.alice, png((0, 255, 0)))
    metadata = await upload(client, users.alice, b'{"mimetype": "image/png", "size": 70}')
    pdf = await upload(client, users.alice, b"%PDF-1.4 not an image")
    pdf_meta = await upload(client, users.alice, b'{"mimetype": "application/pdf"}')
    content_type = {"type": "weave.type_wrappers.Content.content.Content"}

    def call(op: str, parent: str | None, trace: str, **fields: Any) -> dict[str, Any]:
        call_id = str(uuid.uuid4())
        start = datetime.now(UTC)
        return {"id": call_id, "trace_id": trace or call_id, "parent_id": parent,
                "project_id": PROJECT, "op_name": f"weave:///{PROJECT}/op/{op}:abc",
                "started_at": start.isoformat(),
                "ended_at": (start + timedelta(milliseconds=3)).isoformat(),
                "attributes": {}, "inputs": {}, "summary": {}, **fields}  # fmt: skip

    root = call("make_poster", None, "", inputs={"prompt": XSS})
    child = call("render", root["id"], root["id"], output={
        "_type": "CustomWeaveType", "weave_type": {"type": "PIL.Image.Image"},
        "files": {"image.png": pil}})  # fmt: skip
    grandchild = call("frame", child["id"], root["id"], inputs={"art": {
        "_type": "CustomWeaveType", "weave_type": content_type,
        "files": {"content": content, "metadata.json": metadata}}},
        output={"_type": "CustomWeaveType", "weave_type": content_type,
                "files": {"content": pdf, "metadata.json": pdf_meta}})  # fmt: skip
    failed = call("explode", None, "", exception="ValueError: boom")
    batch = {"batch": [root, child, grandchild, failed]}
    await api(client, users.alice, "/v2/acme/gallery/calls/complete", batch)
    generation = await generate(users.alice, PROJECT, "a purple sky")

    alice = await browser_for(users.alice)
    res = await alice.get(f"{BASE}/traces")
    assert res.status_code == 200
    page = res.text
    # Newest trace first: the generation, the failure, then the pipeline.
    order = [m for m in re.findall(r'<li class="call[^"]*" data-call="([^"]+)"', page)]
    assert order[:2] == [generation["id"], failed["id"]]
    assert order[2:] == [root["id"], child["id"], grandchild["id"]]
    # Nesting: each child's <li> sits inside its parent's children list.
    root_html = page[page.index(f'data-call="{root["id"]}"') :]
    assert root_html.index('<ol class="children">') < root_html.index(f'data-call="{child["id"]}"')
    assert "make_poster" in page and "render" in page and "ValueError: boom" in page
    assert XSS not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    shown = set(re.findall(r'<img class="inline" src="/ui/img/acme/gallery/([A-Za-z0-9]+)"', page))
    assert {pil, content} <= shown and pdf not in shown
    assert len(shown) == 3  # and the generation's own image
    img = await alice.get(f"/ui/img/{PROJECT}/{pil}")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"

    focused = await alice.get(f"{BASE}/traces", params={"call": grandchild["id"]})
    assert f'class="call focus" data-call="{grandchild["id"]}"' in focused.text
    assert generation["id"] not in focused.text
    # The links the Weave SDK prints land here.
    link = await alice.get(f"/{PROJECT}/r/call/{child['id']}")
    assert link.status_code == 307
    assert link.headers["location"] == f"{BASE}/traces?call={child['id']}"
    assert (await alice.get(f"/{PROJECT}/weave")).headers["location"] == f"{BASE}/traces"
    gallery = (await alice.get(BASE)).text
    assert f'href="{BASE}/traces"' in gallery


async def test_traces_page_pages_by_trace(
    browser_for: Client, client: httpx.AsyncClient, users: Users
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = []
    for i in range(25):  # 25 one-call traces, a second apart; the page shows 20
        call_id = str(uuid.uuid4())
        at = start + timedelta(seconds=i)
        batch.append({"id": call_id, "trace_id": call_id, "project_id": PROJECT,
                      "op_name": f"weave:///{PROJECT}/op/step_{i:02d}:abc",
                      "started_at": at.isoformat(), "ended_at": at.isoformat(),
                      "attributes": {}, "inputs": {}, "summary": {}})  # fmt: skip
    await api(client, users.alice, "/v2/acme/gallery/calls/complete", {"batch": batch})
    alice = await browser_for(users.alice)
    first = (await alice.get(f"{BASE}/traces")).text
    ops = re.findall(r'<span class="op">(step_\d+)</span>', first)
    assert ops == [f"step_{i:02d}" for i in range(24, 4, -1)]  # newest first
    assert f'href="{BASE}/traces?offset=20"' in first
    second = (await alice.get(f"{BASE}/traces", params={"offset": 20})).text
    assert re.findall(r'<span class="op">(step_\d+)</span>', second) == [
        f"step_{i:02d}" for i in range(4, -1, -1)
    ]
    assert "offset=40" not in second
