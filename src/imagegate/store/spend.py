"""What generations cost: sums of the cost stored in each call's summary.

A call stores `summary.costs.<model> = {images, total_cost, ...}` (the model name is the
key). Walking the keys of a JSON object takes json_each / jsonb_each, spelled differently
on each backend, so the one query here has a spelling per dialect. A `total_cost` that is
not a number (an unpriced model) counts as unpriced, not as free.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from imagegate.store.tables import Timestamp, calls

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


async def spend_by_model(
    conn: AsyncConnection,
    project_ids: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{project_id: {model: {calls, images, total_cost, unpriced_calls}}}."""
    if not project_ids:
        return {}
    window = ""
    params: list[sa.BindParameter[Any]] = [sa.bindparam("ids", expanding=True)]
    values: dict[str, Any] = {"ids": list(project_ids)}
    if since is not None:
        window += " AND c.started_at >= :since"
        params.append(sa.bindparam("since", type_=Timestamp))
        values["since"] = since
    if until is not None:
        window += " AND c.started_at < :until"
        params.append(sa.bindparam("until", type_=Timestamp))
        values["until"] = until
    sql = _BY_MODEL_SQL[conn.dialect.name].replace("{window}", window)
    rows = await conn.execute(sa.text(sql).bindparams(*params), values)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        result.setdefault(row.project_id, {})[row.model] = {
            "calls": int(row.calls),
            "images": int(row.images or 0),
            "total_cost": round(float(row.cost or 0.0), 10),
            "unpriced_calls": int(row.unpriced or 0),
        }
    return result


async def project_spend(
    conn: AsyncConnection,
    project_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The spend endpoint's answer: totals and per-model figures for one project."""
    by_model = (await spend_by_model(conn, [project_id], since=since, until=until)).get(
        project_id, {}
    )
    count = sa.select(sa.func.count()).where(
        calls.c.project_id == project_id, calls.c.deleted_at.is_(None)
    )
    if since is not None:
        count = count.where(calls.c.started_at >= since)
    if until is not None:
        count = count.where(calls.c.started_at < until)
    return {
        "project_id": project_id,
        "calls": int(await conn.scalar(count) or 0),
        "total_cost": round(sum(m["total_cost"] for m in by_model.values()), 10),
        "unpriced_calls": sum(m["unpriced_calls"] for m in by_model.values()),
        "currency": "USD",
        "by_model": by_model,
    }
