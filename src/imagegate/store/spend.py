"""What generations cost: sums of the cost stored in each call's summary.

A call stores `summary.costs.<model> = {images, total_cost, ...}` (the model name is the
key). Walking the keys of a JSON object takes json_each / jsonb_each, spelled differently
on each backend, so the one query here has a spelling per dialect. A `total_cost` that is
not a number (an unpriced model) counts as unpriced, not as free.

Whole hours come from `call_rollups` (migration 0010, kept by triggers on every write):
a sum over about one row per hour and model, however many calls the window holds. Only
the partial hours at a window's ends are summed from the calls themselves.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from imagegate.store.tables import Timestamp, call_rollups, calls

_BY_MODEL_SQL = {
    "sqlite": """
        SELECT c.project_id AS project_id, j.key AS model, COUNT(*) AS calls,
          SUM(CASE WHEN json_type(j.value, '$.images') = 'integer'
                   THEN json_extract(j.value, '$.images') ELSE 0 END) AS images,
          SUM(CASE WHEN json_type(j.value, '$.total_cost') IN ('integer', 'real')
                   THEN json_extract(j.value, '$.total_cost') ELSE 0 END) AS cost,
          SUM(CASE WHEN json_type(j.value, '$.total_cost') IN ('integer', 'real')
                   THEN 0 ELSE 1 END) AS unpriced
        FROM calls AS c, json_each(c.summary, '$.costs') AS j
        WHERE c.project_id IN :ids AND c.deleted_at IS NULL {window}
        GROUP BY c.project_id, j.key
    """,
    "postgresql": """
        SELECT c.project_id AS project_id, j.key AS model, COUNT(*) AS calls,
          SUM(CASE WHEN jsonb_typeof(j.value -> 'images') = 'number'
                   THEN (j.value ->> 'images')::float8 ELSE 0 END) AS images,
          SUM(CASE WHEN jsonb_typeof(j.value -> 'total_cost') = 'number'
                   THEN (j.value ->> 'total_cost')::float8 ELSE 0 END) AS cost,
          SUM(CASE WHEN jsonb_typeof(j.value -> 'total_cost') = 'number'
                   THEN 0 ELSE 1 END) AS unpriced
        FROM calls AS c
        CROSS JOIN LATERAL jsonb_each(
            CASE WHEN jsonb_typeof(c.summary -> 'costs') = 'object'
                 THEN c.summary -> 'costs' ELSE '{}'::jsonb END) AS j
        WHERE c.project_id IN :ids AND c.deleted_at IS NULL {window}
        GROUP BY c.project_id, j.key
    """,
}


ByProject = dict[str, dict[str, dict[str, Any]]]  # {project_id: {model: figures}}
ALL = ""  # call_rollups' model for the row of all live calls (calls, errors)


async def spend_by_model(
    conn: AsyncConnection,
    project_ids: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ByProject:
    """{project_id: {model: {calls, images, total_cost, unpriced_calls}}}."""
    figures = await _figures(conn, project_ids, since, until)
    return {
        project_id: {
            model: {k: v for k, v in f.items() if k != "errors"}
            for model, f in models.items()
            if model != ALL
        }
        for project_id, models in figures.items()
    }


async def call_counts(
    conn: AsyncConnection,
    project_ids: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, tuple[int, int]]:
    """{project_id: (live calls, of which errors)} started in the window."""
    figures = await _figures(conn, project_ids, since, until, only_all=True)
    return {p: (m[ALL]["calls"], m[ALL]["errors"]) for p, m in figures.items() if ALL in m}


async def _figures(
    conn: AsyncConnection,
    project_ids: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    *,
    only_all: bool = False,
) -> ByProject:
    """Rollup figures per project and model ('' for all calls): whole hours from the
    rollups, the partial hours at the ends from the calls. `only_all`: the rollups'
    rows for all calls are enough (the caller reads no model's figures)."""
    if not project_ids:
        return {}
    first = None if since is None else _hour(since, up=True)
    last = None if until is None else _hour(until, up=False)
    if first is not None and last is not None and first >= last:  # no whole hour inside
        return await _from_calls(conn, project_ids, since, until)
    result = await _from_rollups(conn, project_ids, first, last, only_all)
    if since is not None and first is not None and since < first:
        _add(result, await _from_calls(conn, project_ids, since, first))
    if until is not None and last is not None and last < until:
        _add(result, await _from_calls(conn, project_ids, last, until))
    return result


def _hour(at: datetime, *, up: bool) -> datetime:
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    floor = at.replace(minute=0, second=0, microsecond=0)
    return floor + timedelta(hours=1) if up and floor < at else floor


def _add(into: ByProject, more: ByProject) -> None:
    for project_id, models in more.items():
        for model, figures in models.items():
            have = into.setdefault(project_id, {}).setdefault(model, dict.fromkeys(figures, 0))
            for key, value in figures.items():
                have[key] += value
    for models in into.values():
        for figures in models.values():
            figures["total_cost"] = round(figures["total_cost"], 10)


# PostgreSQL: fold a window's delta rows into one row per key, in one statement (the
# rows it deletes are exactly the rows it sums). Only one fold runs at a time; a read
# that finds one running just sums the deltas as they are, which is as correct.
_PG_FOLD = """
    WITH keys AS (
        SELECT project_id, hour, model FROM call_rollups
        WHERE project_id IN :ids {window} GROUP BY 1, 2, 3 HAVING count(*) > 1
    ), moved AS (
        DELETE FROM call_rollups AS r USING keys AS k
        WHERE r.project_id = k.project_id AND r.hour = k.hour AND r.model = k.model
        RETURNING r.*
    )
    INSERT INTO call_rollups (project_id, hour, model, calls, errors, images, cost, unpriced)
    SELECT project_id, hour, model, sum(calls), sum(errors), sum(images), sum(cost),
           sum(unpriced)
    FROM moved GROUP BY 1, 2, 3
"""


_FOLD_LOCK = {"key": zlib.crc32(b"imagegate:call_rollups")}


async def _fold(
    conn: AsyncConnection,
    project_ids: Sequence[str],
    first: datetime | None,
    last: datetime | None,
) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite's triggers already keep one row per key
    window, params, values = _window("hour", project_ids, first, last)
    fold = sa.text(_PG_FOLD.replace("{window}", window)).bindparams(*params)
    async with conn.engine.begin() as writer:
        if await writer.scalar(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), _FOLD_LOCK):
            await writer.execute(fold, values)


def _window(
    column: str, project_ids: Sequence[str], since: datetime | None, until: datetime | None
) -> tuple[str, list[sa.BindParameter[Any]], dict[str, Any]]:
    """The `{window}` of a spend query (`column` from `since`, until `until`), with the
    parameters it and `:ids` (the projects) bind."""
    window = ""
    params: list[sa.BindParameter[Any]] = [sa.bindparam("ids", expanding=True)]
    values: dict[str, Any] = {"ids": list(project_ids)}
    if since is not None:
        window += f" AND {column} >= :since"
        params.append(sa.bindparam("since", type_=Timestamp))
        values["since"] = since
    if until is not None:
        window += f" AND {column} < :until"
        params.append(sa.bindparam("until", type_=Timestamp))
        values["until"] = until
    return window, params, values


async def _from_rollups(
    conn: AsyncConnection,
    project_ids: Sequence[str],
    first: datetime | None,
    last: datetime | None,
    only_all: bool = False,
) -> ByProject:
    await _fold(conn, project_ids, first, last)
    r = call_rollups
    stmt = (
        sa.select(
            r.c.project_id,
            r.c.model,
            sa.func.sum(r.c.calls).label("calls"),
            sa.func.sum(r.c.errors).label("errors"),
            sa.func.sum(r.c.images).label("images"),
            sa.func.sum(r.c.cost).label("cost"),
            sa.func.sum(r.c.unpriced).label("unpriced"),
        )
        .where(r.c.project_id.in_(list(project_ids)))
        .group_by(r.c.project_id, r.c.model)
        .having(sa.func.sum(r.c.calls) != 0)
    )
    if only_all:
        stmt = stmt.where(r.c.model == ALL)
    if first is not None:
        stmt = stmt.where(r.c.hour >= first)
    if last is not None:
        stmt = stmt.where(r.c.hour < last)
    result: ByProject = {}
    for row in await conn.execute(stmt):
        result.setdefault(row.project_id, {})[row.model] = _figures_of(
            row.calls, row.errors, row.images, row.cost, row.unpriced
        )
    return result


def _figures_of(
    calls: Any, errors: Any = 0, images: Any = 0, cost: Any = 0.0, unpriced: Any = 0
) -> dict[str, Any]:
    return {
        "calls": int(calls),
        "errors": int(errors or 0),
        "images": int(images or 0),
        "total_cost": round(float(cost or 0.0), 10),
        "unpriced_calls": int(unpriced or 0),
    }


async def _from_calls(
    conn: AsyncConnection,
    project_ids: Sequence[str],
    since: datetime | None,
    until: datetime | None,
) -> ByProject:
    """The same figures summed from the calls themselves (for partial hours)."""
    window, params, values = _window("c.started_at", project_ids, since, until)
    sql = _BY_MODEL_SQL[conn.dialect.name].replace("{window}", window)
    rows = await conn.execute(sa.text(sql).bindparams(*params), values)
    result: ByProject = {}
    for row in rows:
        result.setdefault(row.project_id, {})[row.model] = _figures_of(
            row.calls, 0, row.images, row.cost, row.unpriced
        )
    counts = (
        sa.select(
            calls.c.project_id,
            sa.func.count().label("calls"),
            sa.func.count(calls.c.exception).label("errors"),
        )
        .where(calls.c.project_id.in_(list(project_ids)), calls.c.deleted_at.is_(None))
        .group_by(calls.c.project_id)
    )
    if since is not None:
        counts = counts.where(calls.c.started_at >= since)
    if until is not None:
        counts = counts.where(calls.c.started_at < until)
    for row in await conn.execute(counts):
        result.setdefault(row.project_id, {})[ALL] = _figures_of(row.calls, row.errors)
    return result


async def project_spend(
    conn: AsyncConnection,
    project_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The spend endpoint's answer: totals and per-model figures for one project."""
    figures = (await _figures(conn, [project_id], since, until)).get(project_id, {})
    by_model = {
        model: {k: v for k, v in f.items() if k != "errors"}
        for model, f in figures.items()
        if model != ALL
    }
    return {
        "project_id": project_id,
        "calls": figures[ALL]["calls"] if ALL in figures else 0,
        "total_cost": round(sum(m["total_cost"] for m in by_model.values()), 10),
        "unpriced_calls": sum(m["unpriced_calls"] for m in by_model.values()),
        "currency": "USD",
        "by_model": by_model,
    }
