"""Another entity gets 403 (or 404) on every trace endpoint for acme's calls, objects,
tables, feedback and files, and nothing of acme's changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import Users, basic
from tests.test_trace_api import complete_call, new_id, upload

ACME = "acme/traces"
CAROL = "carol/own"


async def ok(client: httpx.AsyncClient, key: str, path: str, body: Any) -> Any:
    res = await client.post(path, json=body, headers=basic(key))
    assert res.status_code == 200, (path, res.text)
    return res.json()


@pytest.fixture
async def acme(client, users: Users) -> dict[str, Any]:
    """A call, an object, a table, feedback and a file in acme's project."""
    digest = await upload(client, users.alice, b"acme's secret image")
    call = complete_call(output={"_type": "CustomWeaveType", "files": {"image.png": digest}})
    await ok(client, users.alice, "/v2/acme/traces/calls/complete", {"batch": [call]})
    obj = {"project_id": ACME, "object_id": "secret", "val": {"plan": "world domination"}}
    obj_digest = (await ok(client, users.alice, "/obj/create", {"obj": obj}))["digest"]
    table = {"project_id": ACME, "rows": [{"q": "private"}]}
    created = await ok(client, users.alice, "/table/create", {"table": table})
    weave_ref = f"weave:///{ACME}/call/{call['id']}"
    feedback = {"project_id": ACME, "weave_ref": weave_ref, "feedback_type": "wandb.note.1",
                "payload": {"note": "internal"}}  # fmt: skip
    feedback_id = (await ok(client, users.alice, "/feedback/create", feedback))["id"]
    return {
        "call": call,
        "file": digest,
        "obj_digest": obj_digest,
        "table": created["digest"],
        "row": created["row_digests"][0],
        "weave_ref": weave_ref,
        "feedback": feedback,
        "feedback_id": feedback_id,
    }


def attempts(acme: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    now = datetime.now(UTC).isoformat()
    call_id = acme["call"]["id"]
    start = {"project_id": ACME, "op_name": "op", "started_at": now, "id": new_id()}
    end = {"project_id": ACME, "id": call_id, "ended_at": now, "output": "overwritten"}
    by_id = {"$expr": {"$eq": [{"$getField": "id"}, {"$literal": acme["feedback_id"]}]}}
    obj = {"project_id": ACME, "object_id": "secret"}
    table = {"project_id": ACME, "digest": acme["table"]}
    return [
        ("/v2/acme/traces/calls/complete", {"batch": [complete_call()]}),
        ("/v2/acme/traces/call/start", {"start": start}),
        ("/v2/acme/traces/call/end", {"end": end}),
        ("/call/start", {"start": start}),
        ("/call/end", {"end": end}),
        ("/call/upsert_batch", {"batch": [{"mode": "end", "req": {"end": end}}]}),
        ("/call/update", {"project_id": ACME, "call_id": call_id, "display_name": "pwned"}),
        ("/calls/delete", {"project_id": ACME, "call_ids": [call_id]}),
        ("/call/read", {"project_id": ACME, "id": call_id, "include_feedback": True}),
        (
            "/calls/stream_query",
            {"project_id": ACME, "include_feedback": True, "expand_columns": ["inputs"]},
        ),
        ("/obj/create", {"obj": {**obj, "val": {"plan": "mine"}}}),
        ("/obj/read", {**obj, "digest": acme["obj_digest"]}),
        ("/objs/query", {"project_id": ACME}),
        ("/obj/delete", obj),
        ("/table/create", {"table": {"project_id": ACME, "rows": [{"x": 1}]}}),
        (
            "/table/update",
            {"project_id": ACME, "base_digest": acme["table"], "updates": [{"pop": {"index": 0}}]},
        ),
        ("/table/query", table),
        ("/table/query_stats", table),
        ("/refs/read_batch", {"refs": [f"weave:///{ACME}/object/secret:{acme['obj_digest']}"]}),
        ("/feedback/create", acme["feedback"]),
        ("/feedback/batch/create", {"batch": [acme["feedback"]]}),
        ("/feedback/query", {"project_id": ACME}),
        ("/feedback/replace", {**acme["feedback"], "feedback_id": acme["feedback_id"]}),
        ("/feedback/purge", {"project_id": ACME, "query": by_id}),
        ("/file/content", {"project_id": ACME, "digest": acme["file"]}),
    ]


async def test_another_entity_is_refused_on_every_endpoint(
    client, users: Users, acme: dict[str, Any]
) -> None:
    before = await snapshot(client, users.alice)
    for path, body in attempts(acme):
        for prefix in ("", "/traces"):
            res = await client.post(prefix + path, json=body, headers=basic(users.carol))
            assert res.status_code in (403, 404), (prefix + path, res.status_code, res.text)
            assert "world domination" not in res.text and "internal" not in res.text
    assert await snapshot(client, users.alice) == before


async def test_acme_ids_do_not_reach_into_another_project(
    client, users: Users, acme: dict[str, Any]
) -> None:
    """Carol, in her own project, names acme's digests and refs: nothing comes back."""
    own = {"project_id": CAROL}
    file = await client.post(
        "/file/content", json={**own, "digest": acme["file"]}, headers=basic(users.carol)
    )
    assert file.status_code == 404
    table = await client.post(
        "/table/query", json={**own, "digest": acme["table"]}, headers=basic(users.carol)
    )
    assert table.status_code == 404
    obj = await client.post(
        "/obj/read",
        json={**own, "object_id": "secret", "digest": acme["obj_digest"]},
        headers=basic(users.carol),
    )
    assert obj.status_code == 404
    # Feedback filed under carol's project about acme's call is refused, not stored.
    misfiled = {**acme["feedback"], "project_id": CAROL}
    res = await client.post("/feedback/create", json=misfiled, headers=basic(users.carol))
    assert res.status_code == 400
    assert (await ok(client, users.carol, "/feedback/query", own))["result"] == []
    # A v2 route for carol's project cannot carry acme's calls.
    res = await client.post(
        "/v2/carol/own/calls/complete",
        json={"batch": [complete_call()]},  # project_id acme/traces
        headers=basic(users.carol),
    )
    assert res.status_code in (400, 403)


async def snapshot(client: httpx.AsyncClient, key: str) -> str:
    """Everything acme has, as alice reads it."""
    parts = []
    for path, body in (
        ("/calls/stream_query", {"project_id": ACME, "include_feedback": True}),
        ("/objs/query", {"project_id": ACME}),
        ("/feedback/query", {"project_id": ACME}),
    ):
        res = await client.post(path, json=body, headers=basic(key))
        assert res.status_code == 200
        parts.append(res.text)
    return json.dumps(parts)


async def test_refs_never_read_through_to_another_project(
    client, users: Users, acme: dict[str, Any]
) -> None:
    """Carol stores refs to acme's table and object in her own project: reading them back
    through her refs, or expanding them in her calls, gives nothing of acme's."""
    acme_table = f"weave:///{ACME}/table/{acme['table']}"
    acme_obj = f"weave:///{ACME}/object/secret:{acme['obj_digest']}"
    val = {"rows": acme_table, "other": acme_obj}
    obj = await ok(
        client, users.carol, "/obj/create",
        {"obj": {"project_id": CAROL, "object_id": "sneaky", "val": val}},
    )  # fmt: skip
    mine = f"weave:///{CAROL}/object/sneaky:{obj['digest']}"
    refs = [f"{mine}/attr/rows/id/{acme['row']}", f"{mine}/key/other/key/plan"]
    vals = (await ok(client, users.carol, "/refs/read_batch", {"refs": refs}))["vals"]
    assert vals == [None, None]

    call = complete_call(project_id=CAROL, inputs={"x": acme_obj})
    await ok(client, users.carol, "/v2/carol/own/calls/complete", {"batch": [call]})
    res = await client.post(
        "/calls/stream_query",
        json={"project_id": CAROL, "expand_columns": ["inputs.x"]},
        headers=basic(users.carol),
    )
    assert res.status_code == 200
    assert "world domination" not in res.text
    assert json.loads(res.text.splitlines()[0])["inputs"]["x"] == acme_obj
