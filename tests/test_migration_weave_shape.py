"""Migration 0004_weave_shape on a database that has calls: written in the old shape at
revision 0003, upgraded, then read through the API and the gallery like new calls."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import open_file_store
from imagegate.digest import weave_digest
from imagegate.providers.procedural import render_png
from imagegate.store import FileStore
from imagegate.store.accounts import hash_key
from imagegate.store.db import alembic_config, create_engine, migrate
from imagegate.store.tables import JSONType, Timestamp
from tests.conftest import basic
from tests.web.conftest import sign_in

content_module = pytest.importorskip("weave.type_wrappers.Content.content")

PROJECT = "alice/old"
OP = "weave.image_generation_create"
SIZE = 256
SIZES = f"{SIZE}x{SIZE}"
FILLER = 510  # more than one batch of the migration's 500
CONTENT_TYPE = "weave.type_wrappers.Content.content.Content"

# The calls table and idempotency keys as they are at revision 0003.
calls_0003 = sa.table(
    "calls",
    *(
        sa.column(name, type_)
        for name, type_ in [
            ("id", sa.String),
            ("project_id", sa.String),
            ("op_name", sa.String),
            ("display_name", sa.String),
            ("trace_id", sa.String),
            ("parent_id", sa.String),
            ("started_at", Timestamp),
            ("ended_at", Timestamp),
            ("attributes", JSONType),
            ("inputs", JSONType),
            ("output", JSONType),
            ("summary", JSONType),
            ("exception", sa.Text),
            ("wb_user_id", sa.String),
        ]
    ),
)
keys_0003 = sa.table(
    "idempotency_keys",
    *(
        sa.column(name, type_)
        for name, type_ in [
            ("project_id", sa.String),
            ("user_id", sa.String),
            ("key", sa.String),
            ("request_hash", sa.String),
            ("state", sa.String),
            ("response", JSONType),
            ("created_at", Timestamp),
            ("expires_at", Timestamp),
        ]
    ),
)


async def old_image(files: FileStore, png: bytes, index: int) -> dict[str, Any]:
    """`data[i]` as the service wrote it before 0004 (its own metadata.json included)."""
    digest = await files.put(PROJECT, png)
    metadata = {
        "size": len(png),
        "mimetype": "image/png",
        "digest": digest,
        "filename": f"image_{index}.png",
        "content_type": "bytes",
        "input_type": "bytes",
        "encoding": "utf-8",
        "metadata": {"width": SIZE, "height": SIZE},
        "extension": ".png",
    }
    meta_digest = await files.put(PROJECT, json.dumps(metadata, sort_keys=True).encode())
    return {
        "image": {
            "_type": "CustomWeaveType",
            "weave_type": {"type": CONTENT_TYPE},
            "files": {"content": digest, "metadata.json": meta_digest},
        },
        "content": {
            "digest": digest,
            "mimetype": "image/png",
            "size": len(png),
            "width": SIZE,
            "height": SIZE,
        },
    }


def old_call(
    call_id: str, user_id: str, at: datetime, images: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    inputs = {
        "model": "local/procedural",
        "prompt": f"old call {call_id}",
        "n": len(images) or 1,
        "size": f"{SIZE}x{SIZE}",
        "response_format": "b64_json",
        "seed": 1,
    }
    inputs.update(extra.pop("inputs", {}))
    row = {
        "id": call_id,
        "project_id": PROJECT,
        "op_name": OP,
        "display_name": None,
        "trace_id": call_id.replace("0", "1", 1),
        "parent_id": None,
        "started_at": at,
        "ended_at": at + timedelta(milliseconds=40),
        "attributes": {"imagegate": {"provider": "procedural"}},
        "inputs": inputs,
        "output": {
            "created": int(at.timestamp()),
            "data": images,
            "size": f"{SIZE}x{SIZE}",
            "output_format": "png",
            "usage": {},
        },
        "summary": {
            "usage": {"local/procedural": {"requests": 1, "images": len(images)}},
            "costs": {"local/procedural": {"total_cost": 0.0}},
            "provider_latency_ms": 30,
            "images": len(images),
            "attempts": [],
        },
        "exception": None,
        "wb_user_id": user_id,
    }
    row.update(extra)
    return row


async def seed_at_0003(settings: Settings) -> dict[str, Any]:
    """A database at revision 0003 holding old-shape calls; what the test needs to know."""
    engine = create_engine(settings.resolved_database_url)
    files = open_file_store(settings)
    try:
        await migrate(engine, files=files, revision="0003")
        # The account as revision 0003 stores it (later revisions add columns the live
        # AccountStore writes), in plain SQL.
        key = "ig_" + secrets.token_urlsafe(32)
        uid, eid, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
        async with engine.begin() as conn:
            for table, values in (
                ("users", {"id": uid, "name": "alice", "created_at": now}),
                ("entities", {"id": eid, "name": "alice", "created_at": now}),
                ("memberships", {"user_id": uid, "entity_id": eid, "created_at": now}),
                ("api_keys", {"id": str(uuid.uuid4()), "user_id": uid,
                              "key_hash": hash_key(key), "prefix": key[:9], "created_at": now}),
                ("projects", {"id": PROJECT, "entity_id": eid, "name": "old", "created_at": now}),
            ):  # fmt: skip
                columns = [sa.column(name, Timestamp if name == "created_at" else sa.String)
                           for name in values]  # fmt: skip
                await conn.execute(sa.table(table, *columns).insert().values(values))
        pngs = [render_png("a red fox", 1, SIZE, SIZE, i) for i in range(2)]
        pngs.append(render_png("a blue whale", 1, SIZE, SIZE, 0))
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        two = [await old_image(files, pngs[0], 0), await old_image(files, pngs[1], 1)]
        two[1]["revised_prompt"] = "a red fox, revised"
        url_image = await old_image(files, pngs[2], 0)
        rows = [
            old_call("00000000-0000-7000-8000-00000000000a", uid, at, two),
            old_call(
                "00000000-0000-7000-8000-00000000000b",
                uid,
                at + timedelta(seconds=1),
                [url_image],
                inputs={"response_format": "url"},
            ),
            old_call(
                "00000000-0000-7000-8000-00000000000c",
                uid,
                at + timedelta(seconds=2),
                [await old_image(files, pngs[0], 0)],
                inputs={"n": 2},
                exception="partial_failure: 1 of 2 images failed (provider_error: boom)",
            ),
            old_call(
                "00000000-0000-7000-8000-00000000000d",
                uid,
                at + timedelta(seconds=3),
                [],
                output=None,
                exception="provider_error: upstream down",
            ),
        ]
        rows[2]["summary"]["errors"] = [
            {"error": "boom", "error_type": "provider_error", "status_code": 500}
        ]
        rows[3]["summary"] = {"images": 0, "error": {"type": "provider_error", "status_code": 503}}
        image = await old_image(files, pngs[0], 0)
        rows += [
            old_call(f"00000000-0000-7000-9000-{i:012d}", uid, at + timedelta(minutes=i), [image])
            for i in range(FILLER)
        ]
        lost = {
            **image,
            "image": {**image["image"], "files": {"content": "L" * 43, "metadata.json": "M" * 43}},
        }
        rows.append(
            old_call("00000000-0000-7000-8000-00000000000f", uid, at + timedelta(seconds=4), [lost])
        )
        other_op = {
            **old_call("00000000-0000-7000-8000-00000000000e", uid, at, []),
            "op_name": "weave:///alice/old/op/my_pipeline:AbC",
            "output": {"data": [{"image": "not ours to touch"}]},
        }
        rows.append(other_op)
        async with engine.begin() as conn:
            await conn.execute(calls_0003.insert(), rows)
            await conn.execute(
                keys_0003.insert().values(
                    project_id=PROJECT,
                    user_id=uid,
                    key="old-key",
                    request_hash="0" * 64,
                    state="done",
                    response={"response": {"data": []}, "weave_call_id": rows[0]["id"]},
                    created_at=at,
                    expires_at=datetime.now(UTC) + timedelta(hours=1),
                )
            )
        return {"key": key, "pngs": pngs, "rows": rows, "other_op": other_op}
    finally:
        await engine.dispose()


def weave_metadata(png: bytes, index: int, schema: str, url: str | None = None) -> bytes:
    Content = content_module.Content
    meta = {"source_index": index, "_original_schema": schema}
    if url is None:
        content = Content.from_base64(
            base64.b64encode(png).decode(), mimetype="image/png", metadata=meta
        )
    else:
        content = Content.from_url(url, metadata=meta)
    return json.dumps(content.model_dump(exclude={"data"})).encode()


async def test_old_calls_read_like_new_ones_after_upgrade(settings: Settings) -> None:
    seeded = await seed_at_0003(settings)
    key, pngs = seeded["key"], seeded["pngs"]
    app = create_app(settings)
    async with app.router.lifespan_context(app):  # start-up upgrades to head
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

            async def read(call_id: str) -> dict[str, Any]:
                res = await client.post(
                    "/call/read", json={"project_id": PROJECT, "id": call_id}, headers=basic(key)
                )
                assert res.status_code == 200, res.text
                return res.json()["call"]

            async def content(digest: str) -> bytes:
                res = await client.post(
                    "/file/content",
                    json={"project_id": PROJECT, "digest": digest},
                    headers=basic(key),
                )
                assert res.status_code == 200, res.text
                return res.content

            # A new call, for comparison: old and new read the same.
            new = await client.post(
                "/image/create",
                json={
                    "project_id": PROJECT,
                    "inputs": {
                        "model": "local/procedural",
                        "prompt": "new",
                        "n": 2,
                        "size": "256x256",
                    },
                },
                headers=basic(key),
            )
            assert new.status_code == 200, new.text
            new_output = (await read(new.json()["weave_call_id"]))["output"]

            old = await read("00000000-0000-7000-8000-00000000000a")
            output = old["output"]
            assert list(output) == list(new_output)
            assert set(output["data"][0]) == set(new_output["data"][0])
            assert output["data"][1]["revised_prompt"] == "a red fox, revised"
            assert output["model"] == "local/procedural"
            assert set(output["usage"]) == set(new_output["usage"])
            assert old["summary"]["weave"]["trace_name"] == OP
            for index, item in enumerate(output["data"]):
                ref = item["b64_json"]
                assert ref["_type"] == "CustomWeaveType"
                assert await content(ref["files"]["content"]) == pngs[index]
                metadata = await content(ref["files"]["metadata.json"])
                assert metadata == weave_metadata(pngs[index], index, "b64_json")

            url_call = await read("00000000-0000-7000-8000-00000000000b")
            (item,) = url_call["output"]["data"]
            assert "b64_json" not in item and item["url"]["_type"] == "CustomWeaveType"
            metadata = json.loads(await content(item["url"]["files"]["metadata.json"]))
            assert metadata["metadata"] == {"source_index": 0, "_original_schema": "url"}
            assert metadata["filename"] == f"{weave_digest(pngs[2])}.png"
            # The same image made anew as a URL answer has the very same files (and the
            # new url case is checked against weave's Content.from_url on a live server
            # in tests/test_weave_shape.py).
            again = await client.post(
                "/image/create",
                json={
                    "project_id": PROJECT,
                    "inputs": {
                        "model": "local/procedural",
                        "prompt": "a blue whale",
                        "seed": 1,
                        "size": "256x256",
                        "response_format": "url",
                    },
                },
                headers=basic(key),
            )
            assert again.json()["response"]["data"][0]["url"] == item["url"]

            partial = await read("00000000-0000-7000-8000-00000000000c")
            assert partial["output"]["errors"] == partial["summary"]["errors"]
            assert partial["summary"]["weave"]["status"] == "error"
            failed = await read("00000000-0000-7000-8000-00000000000d")
            assert failed["output"] is None and failed["summary"]["weave"]["status"] == "error"
            # An image missing from the store: moved to its new place, metadata untouched.
            lost = await read("00000000-0000-7000-8000-00000000000f")
            assert lost["output"]["data"][0]["b64_json"]["files"] == {
                "content": "L" * 43,
                "metadata.json": "M" * 43,
            }
            other = await read(seeded["other_op"]["id"])
            assert other["output"] == seeded["other_op"]["output"]  # another op: untouched
            assert other["summary"]["weave"]["trace_name"] == "my_pipeline"

            # Every image-generation call, across batches, is in the new shape.
            res = await client.post(
                "/calls/stream_query",
                json={"project_id": PROJECT, "filter": {"op_names": [OP]}},
                headers=basic(key),
            )
            listed = [json.loads(line) for line in res.text.splitlines() if line]
            assert len(listed) == FILLER + 5 + 2  # the old calls, and the two made since
            for call in listed:
                for item in (call["output"] or {}).get("data", []):
                    assert "image" not in item
                    assert ("b64_json" in item) != ("url" in item)

            # The gallery shows the old calls' images.
            await sign_in(client, key)
            grid = await client.get(f"/ui/p/{PROJECT}")
            assert grid.status_code == 200
            detail = await client.get(f"/ui/p/{PROJECT}/calls/00000000-0000-7000-8000-00000000000a")
            for png in pngs[:2]:
                assert f"/ui/img/{PROJECT}/{weave_digest(png)}.png" in detail.text
            thumb = await client.get(f"/ui/thumb/{PROJECT}/{weave_digest(pngs[0])}.webp")
            assert thumb.status_code == 200

        # Answers kept for replays in the old form are gone (a retry generates again).
        ig = app.state.imagegate
        async with ig.engine.connect() as conn:
            kept = (await conn.execute(sa.select(keys_0003.c.key))).all()
        assert kept == []


async def test_upgrade_without_the_file_store_fails_clearly_and_changes_nothing(
    settings: Settings,
) -> None:
    seeded = await seed_at_0003(settings)
    engine = create_engine(settings.resolved_database_url)
    try:
        with pytest.raises(RuntimeError, match="needs the file store"):
            await migrate(engine)  # as bare alembic would run it: no file store
        async with engine.connect() as conn:
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            output = await conn.scalar(
                sa.select(calls_0003.c.output).where(calls_0003.c.id == seeded["rows"][0]["id"])
            )
        assert version == "0003"
        assert "image" in output["data"][0]  # rolled back whole
    finally:
        await engine.dispose()


async def test_downgrade_gives_back_the_old_shape(settings: Settings) -> None:
    seeded = await seed_at_0003(settings)
    engine = create_engine(settings.resolved_database_url)
    first = seeded["rows"][0]

    def downgrade(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")

    async def output() -> dict[str, Any]:
        async with engine.connect() as conn:
            query = sa.select(calls_0003.c.output).where(calls_0003.c.id == first["id"])
            return dict(await conn.scalar(query))

    try:
        await migrate(engine, files=open_file_store(settings))
        upgraded = await output()
        assert "model" in upgraded and "image" not in upgraded["data"][0]
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        old = await output()
        assert "model" not in old
        assert [item["image"]["files"]["content"] for item in old["data"]] == [
            item["image"]["files"]["content"] for item in first["output"]["data"]
        ]
        assert [item["content"] for item in old["data"]] == [
            item["content"] for item in first["output"]["data"]
        ]
        await migrate(engine, files=open_file_store(settings))  # and up again
        assert await output() == upgraded
    finally:
        await engine.dispose()
