"""The calls query translator against real SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from imagegate.store.query import calls_order_by, calls_where, field_expr
from imagegate.store.query_terms import QueryError
from imagegate.store.tables import calls, entities, metadata, projects
from tests.conftest import Backend

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PROJECT = "acme/images"
ALL = ["c01", "c02", "c03", "c04", "c05", "c06", "c07", "c08"]


def call(
    id: str,
    minute: int,
    latency_ms: int | None,
    inputs: dict[str, Any],
    *,
    op: str = "generate",
    user: str | None = "u1",
    trace: str | None = None,
    parent: str | None = None,
    exception: str | None = None,
    project: str = PROJECT,
    **extra: Any,
) -> dict[str, Any]:
    started = T0 + timedelta(minutes=minute)
    ended = None if latency_ms is None else started + timedelta(milliseconds=latency_ms)
    return {
        "id": id, "project_id": project, "op_name": op, "display_name": None,
        "trace_id": trace or f"t-{id}", "parent_id": parent, "started_at": started,
        "ended_at": ended, "attributes": extra.get("attributes", {}), "inputs": inputs,
        "output": extra.get("output"), "summary": extra.get("summary"),
        "exception": exception, "wb_user_id": user, "deleted_at": extra.get("deleted_at"),
    }  # fmt: skip


CALLS = [
    call("c01", 1, 1500, {"model": "gpt-image-1", "n": 1, "prompt": "a red fox"}, trace="t1"),
    call("c02", 2, 250, {"model": "dall-e-3", "n": 2, "prompt": "A Red Barn", "flag": True},
         user="u2"),
    call("c03", 3, 3000, {"model": "gpt-image-1", "n": 4, "prompt": "100% sure_thing"},
         trace="t3", exception="boom"),
    call("c04", 4, None, {"model": "dall-e-2", "n": 3, "prompt": "100 percent sure thing"},
         op="edit", user="u2", trace="t3", parent="c03"),
    call("c05", 5, 1000, {"model": "gpt-image-1", "n": 1, "prompt": "blue sky"},
         op="edit", user=None, trace="t1", parent="c01"),
    call("c06", 6, 10, {"model": "dall-e-3", "n": "3", "prompt": "50%_off"}),
    call("c07", 7, None, {"n": 2, "prompt": "sure"}, op="variation", user="u3",
         exception="crashed"),
    call("c08", 8, 20000, {"model": "gpt-image-1", "n": 10, "prompt": "RED dragon"},
         attributes={"weave": {"client_version": "0.54"}},
         summary={"usage": {"gpt-image-1": {"requests": 1}}},
         output={"data": [{"url": "https://x/1.png"}]}),
    # Never returned: another project, and a deleted call.
    call("c90", 1, 100, {"model": "gpt-image-1", "n": 1, "prompt": "red"}, project="acme/other"),
    call("c91", 1, 100, {"model": "gpt-image-1", "n": 1, "prompt": "red"},
         deleted_at=T0 + timedelta(days=1)),
]  # fmt: skip


@pytest_asyncio.fixture
async def engine(tmp_path: Path, backend: Backend) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(backend.database_url or f"sqlite+aiosqlite:///{tmp_path}/t.db")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(entities.insert().values(id="e1", name="acme", created_at=T0))
        await conn.execute(
            projects.insert(),
            [
                {"id": p, "entity_id": "e1", "name": p.split("/")[1], "created_at": T0}
                for p in (PROJECT, "acme/other")
            ],
        )
        await conn.execute(calls.insert(), CALLS)
    yield engine
    await engine.dispose()


async def ids(
    engine: AsyncEngine,
    query: Mapping[str, Any] | None = None,
    *,
    filter: Mapping[str, Any] | None = None,
    sort_by: Sequence[Mapping[str, Any]] | None = None,
    project: str = PROJECT,
) -> list[str]:
    stmt = (
        sa.select(calls.c.id)
        .where(calls_where(project, filter, query))
        .order_by(*calls_order_by(sort_by))
    )
    async with engine.connect() as conn:
        return list((await conn.scalars(stmt)).all())


def q(expr: Any) -> dict[str, Any]:
    return {"$expr": expr}


def get(path: str) -> dict[str, str]:
    return {"$getField": path}


def lit(value: Any) -> dict[str, Any]:
    return {"$literal": value}


def contains(path: str, substr: str, ci: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"input": get(path), "substr": lit(substr)}
    if ci is not None:
        spec["case_insensitive"] = ci
    return {"$contains": spec}


@pytest.mark.asyncio
async def test_scoping_and_default_order(engine: AsyncEngine) -> None:
    assert await ids(engine) == ALL  # no c90 (other project), no c91 (deleted)
    assert await ids(engine, project="acme/other") == ["c90"]
    assert await ids(engine, q({"$eq": [get("id"), lit("c90")]})) == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"op_names": ["edit"]}, ["c04", "c05"]),
        ({"op_names": ["edit", "variation"]}, ["c04", "c05", "c07"]),
        ({"call_ids": ["c02", "c08", "c90"]}, ["c02", "c08"]),
        ({"trace_ids": ["t3"]}, ["c03", "c04"]),
        ({"parent_ids": ["c01"]}, ["c05"]),
        ({"wb_user_ids": ["u2"]}, ["c02", "c04"]),
        ({"trace_roots_only": True}, ["c01", "c02", "c03", "c06", "c07", "c08"]),
        ({"trace_roots_only": False}, ALL),
        ({"op_names": [], "call_ids": None, "input_refs": []}, ALL),  # empty = no filter
        ({"op_names": ["generate"], "wb_user_ids": ["u1"]}, ["c01", "c03", "c06", "c08"]),
    ],
)
async def test_filters(engine: AsyncEngine, filter: dict[str, Any], expected: list[str]) -> None:
    assert await ids(engine, filter=filter) == expected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"$eq": [get("inputs.model"), lit("gpt-image-1")]}, ["c01", "c03", "c05", "c08"]),
        ({"$eq": [lit("dall-e-3"), get("inputs.model")]}, ["c02", "c06"]),
        ({"$eq": [get("op_name"), lit("edit")]}, ["c04", "c05"]),
        ({"$eq": [get("inputs.model"), lit(None)]}, ["c07"]),
        ({"$eq": [get("wb_user_id"), lit(None)]}, ["c05"]),
        # numbers compare numerically; the string "3" in c06 is not a number
        ({"$gt": [get("inputs.n"), lit(2)]}, ["c03", "c04", "c08"]),
        ({"$gte": [get("inputs.n"), lit(2)]}, ["c02", "c03", "c04", "c07", "c08"]),
        ({"$lt": [get("inputs.n"), lit(2.5)]}, ["c01", "c02", "c05", "c07"]),
        ({"$lte": [get("inputs.n"), lit(1)]}, ["c01", "c05"]),
        ({"$eq": [get("inputs.n"), lit(3)]}, ["c04"]),
        ({"$eq": [get("inputs.n"), lit("3")]}, ["c04", "c06"]),  # as text, 3 reads "3"
        ({"$eq": [get("inputs.flag"), lit(True)]}, ["c02"]),
        ({"$gt": [{"$convert": {"input": get("inputs.n"), "to": "double"}}, lit(3)]},
         ["c03", "c08"]),
        ({"$eq": [{"$convert": {"input": get("inputs.n"), "to": "int"}}, lit(4)]}, ["c03"]),
        ({"$eq": [{"$convert": {"input": get("inputs.n"), "to": "string"}}, lit("2")]},
         ["c02", "c07"]),
        ({"$not": [{"$convert": {"input": get("inputs.model"), "to": "exists"}}]}, ["c07"]),
        # a comparison used as a boolean operand
        ({"$eq": [{"$gt": [get("inputs.n"), lit(2)]}, lit(False)]},
         ["c01", "c02", "c05", "c07"]),
        # nested JSON paths, including an array index and a key with dashes
        ({"$eq": [get("summary.usage.gpt-image-1.requests"), lit(1)]}, ["c08"]),
        ({"$contains": {"input": get("output.data.0.url"), "substr": lit("1.png")}}, ["c08"]),
        ({"$eq": [get("attributes.weave.client_version"), lit("0.54")]}, ["c08"]),
    ],
)  # fmt: skip
async def test_comparisons(engine: AsyncEngine, expr: Any, expected: list[str]) -> None:
    assert await ids(engine, q(expr)) == expected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (contains("inputs.prompt", "red"), ["c01"]),
        (contains("inputs.prompt", "red", ci=False), ["c01"]),
        (contains("inputs.prompt", "red", ci=True), ["c01", "c02", "c08"]),
        (contains("inputs.prompt", "RED"), ["c08"]),
        # "%" and "_" are literal characters, not wildcards
        (contains("inputs.prompt", "%"), ["c03", "c06"]),
        (contains("inputs.prompt", "e_t"), ["c03"]),
        (contains("inputs.prompt", "0% s"), ["c03"]),
        (contains("inputs.prompt", "%_"), ["c06"]),
        (contains("inputs.prompt", "\\"), []),
        (contains("op_name", "edi"), ["c04", "c05"]),
    ],
)
async def test_contains(engine: AsyncEngine, expr: Any, expected: list[str]) -> None:
    assert await ids(engine, q(expr)) == expected


@pytest.mark.asyncio
async def test_in(engine: AsyncEngine) -> None:
    models = [lit("dall-e-2"), lit("dall-e-3")]
    assert await ids(engine, q({"$in": [get("inputs.model"), models]})) == ["c02", "c04", "c06"]
    with_null = [*models, lit(None)]
    assert await ids(engine, q({"$in": [get("inputs.model"), with_null]})) == [
        "c02", "c04", "c06", "c07"
    ]  # fmt: skip
    as_literal_list = {"$in": [get("id"), lit(["c01", "c08", "nope"])]}
    assert await ids(engine, q(as_literal_list)) == ["c01", "c08"]
    numbers = {"$in": [get("inputs.n"), [lit(1), lit(4)]]}
    assert await ids(engine, q(numbers)) == ["c01", "c03", "c05"]
    assert await ids(engine, q({"$in": [get("id"), []]})) == []


@pytest.mark.asyncio
async def test_and_or_not(engine: AsyncEngine) -> None:
    gpt = {"$eq": [get("inputs.model"), lit("gpt-image-1")]}
    many = {"$gt": [get("inputs.n"), lit(1)]}
    edit = {"$eq": [get("op_name"), lit("edit")]}
    error = {"$eq": [get("summary.weave.status"), lit("error")]}
    assert await ids(engine, q({"$and": [gpt, many]})) == ["c03", "c08"]
    assert await ids(engine, q({"$or": [edit, error]})) == ["c03", "c04", "c05", "c07"]
    # c07 has no model: "not gpt" includes it rather than dropping it as unknown
    assert await ids(engine, q({"$not": [gpt]})) == ["c02", "c04", "c06", "c07"]
    assert await ids(engine, q({"$and": [{"$not": [edit]}, {"$or": [gpt, error]}]})) == [
        "c01", "c03", "c07", "c08"
    ]  # fmt: skip
    assert await ids(engine, q({"$and": []})) == ALL
    assert await ids(engine, q({"$or": []})) == []


@pytest.mark.asyncio
async def test_status_and_latency(engine: AsyncEngine) -> None:
    async def status(value: str) -> list[str]:
        return await ids(engine, q({"$eq": [get("summary.weave.status"), lit(value)]}))

    assert await status("error") == ["c03", "c07"]  # c07 errored while still "running"
    assert await status("running") == ["c04"]
    assert await status("success") == ["c01", "c02", "c05", "c06", "c08"]

    latency = get("summary.weave.latency_ms")
    assert await ids(engine, q({"$gt": [latency, lit(1000)]})) == ["c01", "c03", "c08"]
    assert await ids(engine, q({"$gte": [latency, lit(1000)]})) == ["c01", "c03", "c05", "c08"]
    assert await ids(engine, q({"$lt": [latency, lit(251)]})) == ["c02", "c06"]
    assert await ids(engine, q({"$eq": [latency, lit(20000)]})) == ["c08"]
    assert await ids(engine, q({"$eq": [latency, lit(None)]})) == ["c04", "c07"]


@pytest.mark.asyncio
async def test_timestamps(engine: AsyncEngine) -> None:
    after_5 = ["c06", "c07", "c08"]
    for literal in ("2024-01-01T00:05:00Z", "2024-01-01T01:05:00+01:00", "2024-01-01T00:05:00"):
        assert await ids(engine, q({"$gt": [get("started_at"), lit(literal)]})) == after_5
    epoch = (T0 + timedelta(minutes=5)).timestamp()
    assert await ids(engine, q({"$gt": [get("started_at"), lit(epoch)]})) == after_5
    assert await ids(engine, q({"$lte": [get("started_at"), lit("2024-01-01T00:02:00Z")]})) == [
        "c01", "c02"
    ]  # fmt: skip
    ended_before = {"$lt": [get("ended_at"), lit("2024-01-01T00:03:00Z")]}
    assert await ids(engine, q(ended_before)) == ["c01", "c02"]
    assert await ids(engine, q({"$eq": [get("ended_at"), lit(None)]})) == ["c04", "c07"]


@pytest.mark.asyncio
async def test_sorting(engine: AsyncEngine) -> None:
    desc = [{"field": "started_at", "direction": "desc"}]
    assert await ids(engine, sort_by=desc) == ALL[::-1]
    by_model = [{"field": "inputs.model", "direction": "desc"}]
    # ties broken by id; the call without a model sorts last
    assert await ids(engine, sort_by=by_model) == [
        "c01", "c03", "c05", "c08", "c02", "c06", "c04", "c07"
    ]  # fmt: skip
    by_model_asc = [{"field": "inputs.model", "direction": "asc"}]
    assert await ids(engine, sort_by=by_model_asc) == [
        "c04", "c02", "c06", "c01", "c03", "c05", "c08", "c07"
    ]  # fmt: skip
    by_latency = [{"field": "summary.weave.latency_ms", "direction": "desc"}]
    assert await ids(engine, sort_by=by_latency) == [
        "c08", "c03", "c01", "c05", "c02", "c06", "c04", "c07"
    ]  # fmt: skip
    by_op = [{"field": "op_name"}, {"field": "id", "direction": "desc"}]
    assert await ids(engine, sort_by=by_op) == [
        "c05", "c04", "c08", "c06", "c03", "c02", "c01", "c07"
    ]  # fmt: skip
    gpt = q({"$eq": [get("inputs.model"), lit("gpt-image-1")]})
    assert await ids(engine, gpt, sort_by=desc) == ["c08", "c05", "c03", "c01"]


@pytest.mark.asyncio
async def test_same_shape_different_values(engine: AsyncEngine) -> None:
    """Statement caching must not reuse one query's values for the next."""
    assert await ids(engine, q(contains("inputs.prompt", "sky"))) == ["c05"]
    assert await ids(engine, q(contains("inputs.prompt", "fox"))) == ["c01"]
    for path, value, expected in [("inputs.n", 4, ["c03"]), ("inputs.n", 10, ["c08"])]:
        assert await ids(engine, q({"$eq": [get(path), lit(value)]})) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (q({"$foo": [get("id"), lit("x")]}), "unknown query operator '$foo'"),
        (q({"$eq": [get("nope"), lit("x")]}), "unknown field 'nope'"),
        (q({"$eq": [get("inputs"), lit("x")]}), "invalid field path 'inputs'"),
        (q({"$eq": [get("inputs..a"), lit("x")]}), "invalid field path"),
        (q({"$eq": [get("id")]}), "$eq takes a list of exactly two operands"),
        (q({"$in": [get("id")]}), "$in takes a list of exactly two operands"),
        (q({"$not": [lit(True), lit(False)]}), "$not takes a list of exactly one"),
        (q({"$and": {"a": 1}}), "$and takes a list"),
        (q({"$eq": [get("op_name"), lit(5)]}), "cannot compare a string with 5"),
        (q({"$eq": [get("started_at"), lit("yesterday")]}), "invalid timestamp 'yesterday'"),
        (q({"$gt": [get("started_at"), lit(True)]}), "invalid timestamp True"),
        (q({"$gt": [get("inputs.n"), lit(None)]}), "$gt cannot compare with null"),
        (q({"$eq": [get("inputs.n"), lit([1])]}), "unsupported literal"),
        (q({"$eq": [get("id"), get("started_at")]}), "cannot compare a string with a timestamp"),
        (q({"$contains": {"input": get("inputs.p")}}), "$contains takes"),
        (q({"$convert": {"input": get("inputs.n"), "to": "date"}}), "cannot convert to 'date'"),
        (q({"$and": [get("op_name")]}), "field 'op_name' is a string"),
        (q({"$eq": [{"$getField": 5}, lit(1)]}), "$getField takes a field path string"),
        (q({"$eq": "x"}), "$eq takes a list"),
        (q("nope"), "expected an operator object"),
        ({"$expr": {"$eq": [get("id"), lit("x")]}, "extra": 1}, 'exactly one key, "$expr"'),
        (q({"$in": [get("id"), [lit("x")] * 10_001]}), "at most 10000"),
    ],
)
def test_query_errors(query: Any, message: str) -> None:
    with pytest.raises(QueryError) as info:
        calls_where(PROJECT, None, query)
    assert message in str(info.value)


def test_nesting_limit() -> None:
    expr: Any = {"$eq": [get("id"), lit("x")]}
    for _ in range(30):
        expr = {"$not": [expr]}
    calls_where(PROJECT, None, q(expr))  # deep but allowed
    for _ in range(5):
        expr = {"$not": [expr]}
    with pytest.raises(QueryError, match="deeper than 32"):
        calls_where(PROJECT, None, q(expr))


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"op_names": "generate"}, "filter.op_names must be a list of strings"),
        ({"call_ids": [1]}, "filter.call_ids must be a list of strings"),
        ({"trace_roots_only": "yes"}, "trace_roots_only must be a boolean"),
    ],
)
def test_filter_errors(filter: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        calls_where(PROJECT, filter, None)


@pytest.mark.parametrize(
    ("sort_by", "message"),
    [
        ([{"field": "started_at", "direction": "up"}], "invalid sort direction 'up'"),
        ([{"field": "bogus"}], "unknown field 'bogus'"),
        ([{"direction": "asc"}], "needs a string 'field'"),
        ({"field": "id"}, "sort_by must be a list"),
    ],
)
def test_sort_errors(sort_by: Any, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        calls_order_by(sort_by)


def test_field_expr() -> None:
    assert field_expr("op_name") is calls.c.op_name
    with pytest.raises(QueryError, match=r"unknown field 'outputs\.x'"):
        field_expr("outputs.x")


def test_compiles_for_postgresql() -> None:
    query = q(
        {
            "$and": [
                {"$eq": [get("inputs.model"), lit("gpt-image-1")]},
                {"$gte": [get("inputs.n"), lit(2)]},
                {"$eq": [get("inputs.flag"), lit(True)]},
                {"$lt": [{"$convert": {"input": get("output.data.0.n"), "to": "int"}}, lit(9)]},
                {"$not": [contains("inputs.prompt", "50%_", ci=True)]},
                {"$in": [get("summary.weave.status"), [lit("error"), lit("running")]]},
                {"$gt": [get("summary.weave.latency_ms"), lit(1000)]},
                {"$gt": [get("started_at"), lit("2024-01-01T00:00:00Z")]},
                {"$convert": {"input": get("attributes.weave.x"), "to": "exists"}},
            ]
        }
    )
    sort_by = [{"field": "inputs.model", "direction": "desc"},
               {"field": "summary.weave.latency_ms"}]  # fmt: skip
    stmt = (
        sa.select(calls.c.id)
        .where(calls_where(PROJECT, {"op_names": ["generate"]}, query))
        .order_by(*calls_order_by(sort_by))
    )
    sql = str(stmt.compile(dialect=postgresql.dialect()))
    assert "jsonb_typeof" in sql and "ILIKE" in sql and "EXTRACT(epoch FROM" in sql
    # JSON paths are written literally, as expression indexes name them; values are not.
    assert "(calls.inputs ->> 'model') DESC" in sql and "gpt-image-1" not in sql
    # An equality on inputs.model reads the generated `model` column (its index).
    assert "calls.model = %(" in sql
    assert "julianday" not in sql and "instr(" not in sql and "json_type(" not in sql


@pytest.mark.asyncio
async def test_model_equality_matches_what_the_json_holds(engine: AsyncEngine) -> None:
    """inputs.model == "x" reads the `model` column when "x" fits it; a model name too
    long for the column, or a number, is still found, as the JSON path finds it."""
    long_name = "m" * 300
    async with engine.begin() as conn:
        await conn.execute(
            calls.insert(),
            [
                call("c20", 20, 10, {"model": long_name, "prompt": "long"}),
                call("c21", 21, 10, {"model": 7, "prompt": "number"}),
                call("c22", 22, 10, {"model": "m" * 200, "prompt": "longest kept"}),
            ],
        )
    for value, expected in ((long_name, ["c20"]), ("7", ["c21"]), ("m" * 200, ["c22"])):
        assert await ids(engine, q({"$eq": [get("inputs.model"), lit(value)]})) == expected
        assert await ids(engine, q({"$eq": [lit(value), get("inputs.model")]})) == expected
    assert await ids(engine, q({"$eq": [get("inputs.model"), lit("dall-e-3")]})) == ["c02", "c06"]
