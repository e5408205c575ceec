"""The trace-server endpoints a Weave client writes through, over HTTP, on every backend:
calls (v2 complete, start/end, upsert_batch, update, delete), objects, tables, refs,
feedback, the stream_query additions, /graphql, /traces and the 501s."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from imagegate.digest import weave_digest
from tests.conftest import Users, basic

PROJECT = "acme/traces"
REF = f"weave:///{PROJECT}"


def new_id() -> str:
    return str(uuid.uuid4())


def complete_call(**fields: Any) -> dict[str, Any]:
    call_id = fields.pop("id", None) or new_id()
    start = datetime.now(UTC)
    return {
        "id": call_id,
        "trace_id": fields.pop("trace_id", call_id),
        "project_id": PROJECT,
        "op_name": f"{REF}/op/step:abc",
        "started_at": start.isoformat(),
        "ended_at": (start + timedelta(milliseconds=5)).isoformat(),
        "attributes": {},
        "inputs": {"i": 1},
        "output": 2,
        "summary": {"usage": {}},
        **fields,
    }


async def post(client: httpx.AsyncClient, key: str, path: str, body: Any) -> httpx.Response:
    return await client.post(path, json=body, headers=basic(key))


async def ok(client: httpx.AsyncClient, key: str, path: str, body: Any) -> Any:
    res = await post(client, key, path, body)
    assert res.status_code == 200, (path, res.status_code, res.text)
    return res.json()


async def stream(client: httpx.AsyncClient, key: str, **req: Any) -> list[dict[str, Any]]:
    res = await post(client, key, "/calls/stream_query", {"project_id": PROJECT, **req})
    assert res.status_code == 200, res.text
    return [json.loads(line) for line in res.text.splitlines()]


async def test_calls_complete_stores_whole_calls_once(client, users: Users, imagegate) -> None:
    root = complete_call(wb_user_id="someone-else")
    child = complete_call(trace_id=root["id"], parent_id=root["id"], output={"x": [1, 2]})
    batch = {"batch": [root, child]}
    assert await ok(client, users.alice, "/v2/acme/traces/calls/complete", batch) == {}
    # A client's retry of the same batch stores nothing twice.
    assert await ok(client, users.alice, "/traces/v2/acme/traces/calls/complete", batch) == {}
    calls = await stream(client, users.alice)
    assert [c["id"] for c in calls] == [root["id"], child["id"]]
    alice = await imagegate.accounts.authenticate(users.alice)
    assert {c["wb_user_id"] for c in calls} == {alice.user_id}  # never the client's value
    assert calls[1]["output"] == {"x": [1, 2]}
    assert calls[1]["summary"]["weave"]["status"] == "success"
    assert calls[1]["summary"]["weave"]["latency_ms"] == 5

    only_roots = await stream(client, users.alice, filter={"trace_roots_only": True})
    assert [c["id"] for c in only_roots] == [root["id"]]
    children = await stream(client, users.alice, filter={"parent_ids": [root["id"]]})
    assert [c["id"] for c in children] == [child["id"]]
    by_trace = await stream(client, users.alice, filter={"trace_ids": [root["id"]]})
    assert len(by_trace) == 2

    # One call twice in a batch, beside a stored one and a new one: each stored once, and
    # counted once (the project's count comes from the rollups).
    again, new = complete_call(), complete_call(output=None)
    twice = {"batch": [again, root, again, new]}
    assert await ok(client, users.alice, "/v2/acme/traces/calls/complete", twice) == {}
    calls = await stream(client, users.alice)
    assert sorted(c["id"] for c in calls) == sorted(
        [root["id"], child["id"], again["id"], new["id"]]
    )
    assert [c["output"] for c in calls if c["id"] == new["id"]] == [None]
    stats = await ok(client, users.alice, "/calls/query_stats", {"project_id": PROJECT})
    assert stats["count"] == 4


async def test_calls_complete_refuses_items_for_another_project(client, users: Users) -> None:
    other = complete_call(project_id="acme/elsewhere")
    res = await post(client, users.alice, "/v2/acme/traces/calls/complete", {"batch": [other]})
    assert res.status_code == 400
    assert "acme/elsewhere" in res.json()["detail"]
    assert await stream(client, users.alice) == []


async def test_start_end_upsert_batch_update_and_v2(client, users: Users) -> None:
    now = datetime.now(UTC).isoformat()
    start = {"project_id": PROJECT, "op_name": "op", "started_at": now, "inputs": {"a": 1}}
    started = await ok(client, users.alice, "/call/start", {"start": start})
    assert started["trace_id"] == started["id"]  # a new root call gets its own trace
    running = await stream(client, users.alice, filter={"call_ids": [started["id"]]})
    assert running[0]["summary"]["weave"]["status"] == "running"
    end = {"project_id": PROJECT, "id": started["id"], "ended_at": now, "output": "done"}
    await ok(client, users.alice, "/call/end", {"end": end})
    [ended] = await stream(client, users.alice, filter={"call_ids": [started["id"]]})
    assert ended["output"] == "done" and ended["summary"]["weave"]["status"] == "success"

    batch_id = new_id()
    res = await ok(
        client,
        users.alice,
        "/call/upsert_batch",
        {
            "batch": [
                {"mode": "start", "req": {"start": {**start, "id": batch_id}}},
                {
                    "mode": "end",
                    "req": {"end": {**end, "id": batch_id, "exception": "ValueError: no"}},
                },
            ]
        },
    )
    assert res["res"][0] == {"id": batch_id, "trace_id": batch_id}
    [failed] = await stream(client, users.alice, filter={"call_ids": [batch_id]})
    assert failed["exception"] == "ValueError: no"
    assert failed["summary"]["weave"]["status"] == "error"

    v2_id = new_id()
    v2 = await ok(
        client, users.alice, "/v2/acme/traces/call/start", {"start": {**start, "id": v2_id}}
    )
    assert v2["id"] == v2_id
    await ok(client, users.alice, "/v2/acme/traces/call/end", {"end": {**end, "id": v2_id}})

    rename = {"project_id": PROJECT, "call_id": v2_id, "display_name": "Nice"}
    await ok(client, users.alice, "/call/update", rename)
    [renamed] = await stream(client, users.alice, filter={"call_ids": [v2_id]})
    assert renamed["display_name"] == "Nice"
    await ok(client, users.alice, "/call/update", {**rename, "display_name": ""})
    [cleared] = await stream(client, users.alice, filter={"call_ids": [v2_id]})
    assert cleared["display_name"] is None
    missing = await post(client, users.alice, "/call/update", {**rename, "call_id": new_id()})
    assert missing.status_code == 404


async def test_delete_takes_descendants_and_hides_them_everywhere(client, users: Users) -> None:
    root = complete_call()
    child = complete_call(trace_id=root["id"], parent_id=root["id"])
    grandchild = complete_call(trace_id=root["id"], parent_id=child["id"])
    other = complete_call()
    batch = {"batch": [root, child, grandchild, other]}
    await ok(client, users.alice, "/v2/acme/traces/calls/complete", batch)
    res = await ok(
        client, users.alice, "/calls/delete", {"project_id": PROJECT, "call_ids": [root["id"]]}
    )
    assert res == {"num_deleted": 3}
    assert [c["id"] for c in await stream(client, users.alice)] == [other["id"]]
    read = await ok(client, users.alice, "/call/read", {"project_id": PROJECT, "id": child["id"]})
    assert read == {"call": None}
    stats = await ok(client, users.alice, "/calls/query_stats", {"project_id": PROJECT})
    assert stats["count"] == 1


async def upload(client: httpx.AsyncClient, key: str, data: bytes) -> str:
    res = await client.post(
        "/file/create",
        data={"project_id": PROJECT},
        files={"file": ("f", data)},
        headers=basic(key),
    )
    assert res.status_code == 200, res.text
    return str(res.json()["digest"])


def content_ref(digest: str) -> dict[str, Any]:
    return {"_type": "CustomWeaveType", "weave_type": {"type": "PIL.Image.Image"},
            "files": {"image.png": digest}}  # fmt: skip


async def file_status(client: httpx.AsyncClient, key: str, digest: str) -> int:
    res = await post(client, key, "/file/content", {"project_id": PROJECT, "digest": digest})
    return res.status_code


async def test_shared_files_are_removed_only_when_nothing_references_them(
    client, users: Users
) -> None:
    shared = await upload(client, users.alice, b"shared image bytes")
    own = await upload(client, users.alice, b"only the first call's bytes")
    first = complete_call(output={"a": content_ref(shared), "b": content_ref(own)})
    second = complete_call(output=content_ref(shared))
    await ok(client, users.alice, "/v2/acme/traces/calls/complete", {"batch": [first, second]})
    obj = {"project_id": PROJECT, "object_id": "poster", "val": {"img": content_ref(shared)}}
    await ok(client, users.alice, "/obj/create", {"obj": obj})

    delete = {"project_id": PROJECT, "call_ids": [first["id"]]}
    await ok(client, users.alice, "/calls/delete", delete)
    assert await file_status(client, users.alice, own) == 404  # no one else had it
    assert await file_status(client, users.alice, shared) == 200  # the second call has it

    await ok(client, users.alice, "/calls/delete", {**delete, "call_ids": [second["id"]]})
    assert await file_status(client, users.alice, shared) == 200  # the object still has it
    await ok(client, users.alice, "/obj/delete", {"project_id": PROJECT, "object_id": "poster"})
    assert await file_status(client, users.alice, shared) == 404


async def test_deleting_a_generation_stops_serving_its_images(client, users: Users) -> None:
    inputs = {"model": "local/procedural", "prompt": "a red fox", "size": "256x256"}
    res = await ok(
        client,
        users.alice,
        "/image/create",
        {"project_id": PROJECT, "inputs": {**inputs, "response_format": "url"}},
    )
    call_id = res["weave_call_id"]
    url = res["response"]["data"][0]["content"]["url"]  # the signed link (gen's Weave shape)
    assert (await client.get(url)).status_code == 200
    read = await ok(client, users.alice, "/call/read", {"project_id": PROJECT, "id": call_id})
    digests = referenced_files(read["call"]["output"])
    assert digests, "the generation references no files"

    await ok(client, users.alice, "/calls/delete", {"project_id": PROJECT, "call_ids": [call_id]})
    assert (await client.get(url)).status_code == 404
    for digest in digests:
        assert await file_status(client, users.alice, digest) == 404


def referenced_files(value: Any) -> set[str]:
    if isinstance(value, dict):
        files = value.get("files")
        found = set(files.values()) if isinstance(files, dict) else set()
        return found.union(*(referenced_files(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(referenced_files(v) for v in value))
    return set()


async def test_objects_are_versioned_by_content(client, users: Users) -> None:
    obj = {"project_id": PROJECT, "object_id": "model", "val": {"b": 1, "a": [1, 2]}}
    first = await ok(client, users.alice, "/obj/create", {"obj": obj})
    # Weave's digest: canonical JSON (sorted keys), SHA-256, Weave's alphabet.
    assert first["digest"] == weave_digest(
        json.dumps({"a": [1, 2], "b": 1}, sort_keys=True).encode()
    )
    again = await ok(client, users.alice, "/obj/create", {"obj": obj})
    assert again["digest"] == first["digest"]
    second = await ok(client, users.alice, "/obj/create", {"obj": {**obj, "val": {"b": 2}}})

    async def read(digest: str) -> httpx.Response:
        body = {"project_id": PROJECT, "object_id": "model", "digest": digest}
        return await post(client, users.alice, "/obj/read", body)

    latest = (await read("latest")).json()["obj"]
    assert latest["digest"] == second["digest"]
    assert latest["version_index"] == 1 and latest["is_latest"] == 1
    v0 = (await read("v0")).json()["obj"]
    assert v0["val"] == {"b": 1, "a": [1, 2]} and v0["is_latest"] == 0

    query = {"project_id": PROJECT, "filter": {"object_ids": ["model"], "latest_only": True}}
    objs = (await ok(client, users.alice, "/objs/query", query))["objs"]
    assert [o["digest"] for o in objs] == [second["digest"]]
    deleted = await ok(
        client,
        users.alice,
        "/obj/delete",
        {"project_id": PROJECT, "object_id": "model", "digests": [second["digest"]]},
    )
    assert deleted["num_deleted"] == 1
    gone = await read(second["digest"])
    assert gone.status_code == 404 and gone.json()["deleted_at"]
    assert (await read("latest")).json()["obj"]["digest"] == first["digest"]
    never = await read("v9")
    assert never.status_code == 404 and "deleted_at" not in never.json()

    wrong = {**obj, "val": {"c": 3}, "expected_digest": first["digest"]}
    mismatch = await post(client, users.alice, "/obj/create", {"obj": wrong})
    assert mismatch.status_code == 409


async def test_tables_and_refs(client, users: Users) -> None:
    rows = [{"n": 2, "name": "b"}, {"n": 10, "name": "a"}]
    table = await ok(
        client, users.alice, "/table/create", {"table": {"project_id": PROJECT, "rows": rows}}
    )
    assert len(table["row_digests"]) == 2
    updated = await ok(
        client,
        users.alice,
        "/table/update",
        {
            "project_id": PROJECT,
            "base_digest": table["digest"],
            "updates": [
                {"append": {"row": {"n": 1, "name": "c"}}},
                {"pop": {"index": 0}},
                {"insert": {"index": 0, "row": {"n": 5, "name": "d"}}},
            ],
        },
    )
    assert updated["digest"] != table["digest"] and len(updated["updated_row_digests"]) == 2
    query = {"project_id": PROJECT, "digest": updated["digest"]}
    got = (await ok(client, users.alice, "/table/query", query))["rows"]
    assert [r["val"]["name"] for r in got] == ["d", "a", "c"]
    by_n = await ok(
        client,
        users.alice,
        "/table/query",
        {**query, "sort_by": [{"field": "n", "direction": "asc"}]},
    )
    assert [r["val"]["n"] for r in by_n["rows"]] == [1, 5, 10]
    assert (await ok(client, users.alice, "/table/query_stats", query)) == {"count": 3}
    bad_pop = {**query, "base_digest": updated["digest"], "updates": [{"pop": {"index": 9}}]}
    bad_pop.pop("digest")
    assert (await post(client, users.alice, "/table/update", bad_pop)).status_code == 400

    dataset = {"rows": f"{REF}/table/{updated['digest']}", "meta": {"k": ["x", "y"]}}
    obj = await ok(
        client,
        users.alice,
        "/obj/create",
        {"obj": {"project_id": PROJECT, "object_id": "ds", "val": dataset}},
    )
    base = f"{REF}/object/ds:{obj['digest']}"
    row = got[1]["digest"]
    refs = [
        base,
        f"{base}/key/meta/key/k/index/1",
        f"{base}/attr/rows/id/{row}",
        f"{REF}/object/nope:abc",
    ]
    vals = (await ok(client, users.alice, "/refs/read_batch", {"refs": refs}))["vals"]
    assert vals == [dataset, "y", {"n": 10, "name": "a"}, None]


async def test_expand_columns_and_include_feedback(client, users: Users) -> None:
    obj = await ok(
        client,
        users.alice,
        "/obj/create",
        {"obj": {"project_id": PROJECT, "object_id": "cfg", "val": {"temperature": 0.5}}},
    )
    ref = f"{REF}/object/cfg:{obj['digest']}"
    call = complete_call(inputs={"config": ref})
    await ok(client, users.alice, "/v2/acme/traces/calls/complete", {"batch": [call]})
    weave_ref = f"{REF}/call/{call['id']}"
    note = {"project_id": PROJECT, "weave_ref": weave_ref, "feedback_type": "wandb.note.1",
            "payload": {"note": "hi"}}  # fmt: skip
    await ok(client, users.alice, "/feedback/create", note)

    [plain] = await stream(client, users.alice)
    assert plain["inputs"]["config"] == ref and "feedback" not in plain["summary"]["weave"]
    [expanded] = await stream(
        client, users.alice, expand_columns=["inputs.config"], include_feedback=True
    )
    assert expanded["inputs"]["config"] == {"temperature": 0.5}
    assert [f["payload"] for f in expanded["summary"]["weave"]["feedback"]] == [{"note": "hi"}]
    [unexpanded] = await stream(
        client, users.alice, expand_columns=["inputs.config"], return_expanded_column_values=False
    )
    assert unexpanded["inputs"]["config"] == ref
    read = await ok(
        client, users.alice, "/call/read",
        {"project_id": PROJECT, "id": call["id"], "include_feedback": True},
    )  # fmt: skip
    assert len(read["call"]["summary"]["weave"]["feedback"]) == 1


async def test_feedback_round_trip(client, users: Users, imagegate) -> None:
    weave_ref = f"{REF}/call/{new_id()}"
    item = {"project_id": PROJECT, "weave_ref": weave_ref, "feedback_type": "wandb.reaction.1",
            "payload": {"emoji": "👍"}, "wb_user_id": "forged", "scorer_tags": ["x"]}  # fmt: skip
    created = await ok(client, users.alice, "/feedback/create", item)
    alice = await imagegate.accounts.authenticate(users.alice)
    assert created["wb_user_id"] == alice.user_id
    batch = await ok(
        client,
        users.bob,
        "/feedback/batch/create",
        {"batch": [{**item, "id": "fixed-id", "payload": {"emoji": "👎"}},
                   {**item, "feedback_type": "wandb.note.1", "payload": {"note": "meh"}}]},
    )  # fmt: skip
    assert batch["res"][0]["id"] == "fixed-id"

    by_ref = {"$expr": {"$eq": [{"$getField": "weave_ref"}, {"$literal": weave_ref}]}}
    query = {
        "project_id": PROJECT,
        "query": by_ref,
        "sort_by": [{"field": "created_at", "direction": "asc"}],
    }
    listed = await ok(client, users.alice, "/feedback/query", query)
    assert listed["total_count"] == 3
    assert listed["result"][0]["scorer_tags"] == ["x"]  # what the client sent, kept
    notes = {"$expr": {"$eq": [{"$getField": "payload.note"}, {"$literal": "meh"}]}}
    assert (
        len((await ok(client, users.alice, "/feedback/query", {**query, "query": notes}))["result"])
        == 1
    )

    replaced = await ok(
        client,
        users.alice,
        "/feedback/replace",
        {**item, "feedback_id": created["id"], "payload": {"emoji": "🎉"}},
    )
    assert replaced["id"] != created["id"] and replaced["payload"] == {"emoji": "🎉"}
    by_id = {"$expr": {"$eq": [{"$getField": "id"}, {"$literal": "fixed-id"}]}}
    await ok(client, users.alice, "/feedback/purge", {"project_id": PROJECT, "query": by_id})
    left = (await ok(client, users.alice, "/feedback/query", query))["result"]
    assert sorted(json.dumps(f["payload"]) for f in left) == sorted(
        [json.dumps({"note": "meh"}), json.dumps({"emoji": "🎉"})]
    )
    bad = {"project_id": PROJECT, "query": {"$expr": {"$regex": ["a"]}}}
    assert (await post(client, users.alice, "/feedback/query", bad)).status_code == 400


async def test_unserved_client_routes_answer_501_at_once(client, users: Users) -> None:
    for path in ("/project/stats", "/traces/project/stats", "/v2/acme/traces/ops", "/cost/query"):
        res = await post(client, users.alice, path, {"project_id": PROJECT})
        assert res.status_code == 501, path
        assert res.headers["x-should-retry"] == "false"  # so the client reports it at once
        assert "imagegate does not implement" in res.json()["detail"]
    assert (
        await client.get("/traces/v2/acme/traces/ops", headers=basic(users.alice))
    ).status_code == 501
    assert (await client.get("/no/such/route")).status_code == 404


async def graphql(
    client: httpx.AsyncClient, key: str | None, query: str, **variables: Any
) -> httpx.Response:
    headers = basic(key) if key else {}
    return await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )


# As weave's compat/wandb/wandb_thin/internal_api.py sends them.
PROJECT_QUERY = """
query Project($name: String!, $entityName: String!) {
    project(name: $name, entityName: $entityName) { name }
}"""
UPSERT = """
mutation UpsertModel($name: String!, $id: String, $entity: String!) {
    upsertModel(input: { id: $id, name: $name, entityName: $entity }) { model { name } }
}"""


async def test_graphql_answers_what_weave_init_asks(client, users: Users) -> None:
    res = await graphql(
        client, users.alice, "query DefaultEntity { viewer { username defaultEntity { name } } }"
    )
    assert res.json() == {
        "data": {"viewer": {"username": "alice", "defaultEntity": {"name": "alice"}}}
    }
    missing = await graphql(client, users.alice, PROJECT_QUERY, name="newproj", entityName="acme")
    assert missing.json() == {"data": {"project": None}}
    created = await graphql(client, users.alice, UPSERT, name="newproj", entity="acme")
    assert created.json()["data"]["upsertModel"]["model"]["name"] == "newproj"
    found = await graphql(client, users.bob, PROJECT_QUERY, name="newproj", entityName="acme")
    assert found.json() == {"data": {"project": {"name": "newproj"}}}

    for query, variables in ((PROJECT_QUERY, {"name": "newproj", "entityName": "acme"}),
                             (UPSERT, {"name": "carolwas", "entity": "acme"})):  # fmt: skip
        refused = (await graphql(client, users.carol, query, **variables)).json()
        assert refused["errors"][0]["extensions"]["code"] == "PERMISSION_ERROR"
    info = await graphql(client, users.alice, "query ServerInfo { serverInfo { frontendHost } }")
    assert info.json() == {"data": {"serverInfo": {"frontendHost": "http://testserver"}}}
    access = (
        "query Entity($entityName: String!) "
        "{ viewer { username } entity(name: $entityName) { readOnly } }"
    )
    member = (await graphql(client, users.bob, access, entityName="acme")).json()["data"]
    assert member == {"viewer": {"username": "bob"}, "entity": {"readOnly": False}}
    outsider = (await graphql(client, users.carol, access, entityName="acme")).json()["data"]
    assert outsider["entity"] is None
    other = await graphql(client, users.alice, "query Other { whatever }")
    assert "Project" in other.json()["errors"][0]["message"]
    assert (
        await graphql(client, None, PROJECT_QUERY, name="x", entityName="acme")
    ).status_code == 401


async def test_a_retry_never_replays_a_deleted_generation(client, users: Users) -> None:
    body = {
        "project_id": PROJECT,
        "inputs": {"model": "local/procedural", "prompt": "a red fox", "size": "256x256"},
    }
    headers = {**basic(users.alice), "X-Weave-Retry-Id": "retry-1"}
    first = await client.post("/image/create", json=body, headers=headers)
    call_id = first.json()["weave_call_id"]
    replay = await client.post("/image/create", json=body, headers=headers)
    assert replay.json()["weave_call_id"] == call_id  # replayed while it exists
    ref = f"{REF}/call/{call_id}"
    note = {"project_id": PROJECT, "weave_ref": ref, "feedback_type": "wandb.note.1",
            "payload": {"note": "gone soon"}}  # fmt: skip
    await ok(client, users.alice, "/feedback/create", note)

    await ok(client, users.alice, "/calls/delete", {"project_id": PROJECT, "call_ids": [call_id]})
    again = await client.post("/image/create", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["weave_call_id"] != call_id  # generated anew, not the deleted one
    left = await ok(client, users.alice, "/feedback/query", {"project_id": PROJECT})
    assert left["result"] == []  # feedback on a deleted call goes with it


async def test_thread_run_and_ref_filters(client, users: Users) -> None:
    ref = f"{REF}/object/dataset:abc%_*"  # LIKE wildcards in a ref are taken literally
    in_thread = complete_call(thread_id="t-1", turn_id="turn-1", wb_run_id="acme/traces/run1")
    takes_ref = complete_call(inputs={"data": ref})
    gives_ref = complete_call(output=[ref])
    lookalike = complete_call(inputs={"data": f"{REF}/object/dataset:abcX_*"})
    batch = {"batch": [in_thread, takes_ref, gives_ref, lookalike]}
    await ok(client, users.alice, "/v2/acme/traces/calls/complete", batch)

    async def ids(**flt: Any) -> list[str]:
        return [c["id"] for c in await stream(client, users.alice, filter=flt)]

    assert await ids(thread_ids=["t-1"]) == [in_thread["id"]]
    assert await ids(turn_ids=["turn-1"]) == [in_thread["id"]]
    assert await ids(wb_run_ids=["acme/traces/run1"]) == [in_thread["id"]]
    [read] = await stream(client, users.alice, filter={"call_ids": [in_thread["id"]]})
    assert (read["thread_id"], read["turn_id"], read["wb_run_id"]) == (
        "t-1", "turn-1", "acme/traces/run1",
    )  # fmt: skip
    assert await ids(input_refs=[ref]) == [takes_ref["id"]]
    assert await ids(output_refs=[ref]) == [gives_ref["id"]]
    assert await ids(thread_ids=[]) == await ids()  # empty is no filter, as in Weave
