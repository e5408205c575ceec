"""Hourly rollups of calls and spend, kept by the database on every write.

`call_rollups` holds signed deltas per (project, hour of started_at, model): calls,
errors, images, cost and unpriced calls. model '' is the row for all live calls (calls
and errors); a model's rows come from `summary.costs.<model>`. Triggers add a call's
figures when it is written and take them back when it is changed or deleted, so every
writer (generations, Weave clients, deletes) keeps them right without knowing of them.

Deltas, not one row per key: on PostgreSQL an upsert would lock a hot row (this hour's)
until commit, and two batches could deadlock on rows taken in different orders. Inserts
never wait; readers fold the deltas into one row per key as they go (store/spend.py), so
what a read sums is about one row per hour and model.

PostgreSQL's triggers are per statement, over transition tables: a batch of 1,000
calls writes a few rows, not 2,000. SQLite's are per row, its only kind.

The migration fills the table from the calls already stored.

Revision ID: 0010_call_rollups
Revises: 0009_read_indexes
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_call_rollups"
down_revision = "0009_read_indexes"
branch_labels = None
depends_on = None

# One change set `src` (project_id, started_at, exception, summary, sign) as rollup rows.
PG_HOUR = "date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
PG_DELTAS = """
    SELECT * FROM (
    SELECT project_id, {hour} AS hour, '' AS model,
           sum(sign) AS calls,
           sum(CASE WHEN exception IS NOT NULL THEN sign ELSE 0 END) AS errors,
           0 AS images, 0.0 AS cost, 0 AS unpriced
    FROM {src} AS s GROUP BY 1, 2
    UNION ALL
    SELECT project_id, {hour}, j.key, sum(sign), 0,
           sum(sign * CASE WHEN jsonb_typeof(j.value -> 'images') = 'number'
                           THEN (j.value ->> 'images')::float8 ELSE 0 END),
           sum(sign * CASE WHEN jsonb_typeof(j.value -> 'total_cost') = 'number'
                           THEN (j.value ->> 'total_cost')::float8 ELSE 0 END),
           sum(sign * CASE WHEN jsonb_typeof(j.value -> 'total_cost') = 'number'
                           THEN 0 ELSE 1 END)
    FROM {src} AS s CROSS JOIN LATERAL jsonb_each(
        CASE WHEN jsonb_typeof(s.summary -> 'costs') = 'object'
             THEN s.summary -> 'costs' ELSE '{{}}'::jsonb END) AS j
    GROUP BY 1, 2, 3
    ) AS d  -- a change that moves nothing (a rename) writes nothing
    WHERE calls <> 0 OR errors <> 0 OR images <> 0 OR cost <> 0 OR unpriced <> 0
"""
COLUMNS = "project_id, hour, model, calls, errors, images, cost, unpriced"
LIVE = "SELECT project_id, started_at, exception, summary, {sign} AS sign FROM {rows} " + (
    "WHERE deleted_at IS NULL"
)
PG_FUNCTION = """
CREATE FUNCTION calls_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO call_rollups ({columns}) {insert};
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO call_rollups ({columns}) {delete};
    ELSE
        INSERT INTO call_rollups ({columns}) {update};
    END IF;
    RETURN NULL;
END $$
"""
SQLITE_HOUR = "substr({row}.started_at, 1, 13) || ':00:00.000000'"
# SQLite has one writer at a time, so its triggers can add to one row per key in place.
SQLITE_UPSERT = """ON CONFLICT (project_id, hour, model) DO UPDATE SET
    calls = calls + excluded.calls, errors = errors + excluded.errors,
    images = images + excluded.images, cost = cost + excluded.cost,
    unpriced = unpriced + excluded.unpriced"""
SQLITE_ADD = """
    INSERT INTO call_rollups ({columns})
    SELECT {row}.project_id, {hour}, '', {sign}, {sign} * ({row}.exception IS NOT NULL), 0, 0, 0
    WHERE {row}.deleted_at IS NULL {upsert};
    INSERT INTO call_rollups ({columns})
    SELECT {row}.project_id, {hour}, j.key, {sign},  0,
      {sign} * CASE WHEN json_type(j.value, '$.images') = 'integer'
                    THEN json_extract(j.value, '$.images') ELSE 0 END,
      {sign} * CASE WHEN json_type(j.value, '$.total_cost') IN ('integer', 'real')
                    THEN json_extract(j.value, '$.total_cost') ELSE 0 END,
      {sign} * CASE WHEN json_type(j.value, '$.total_cost') IN ('integer', 'real')
                    THEN 0 ELSE 1 END
    FROM json_each({row}.summary, '$.costs') AS j
    WHERE {row}.deleted_at IS NULL AND json_type({row}.summary, '$.costs') = 'object'
    {upsert};
"""
SQLITE_BACKFILL = """
    INSERT INTO call_rollups ({columns})
    SELECT project_id, hour, model, sum(calls), sum(errors), sum(images), sum(cost),
           sum(unpriced)
    FROM (
        SELECT c.project_id, substr(c.started_at, 1, 13) || ':00:00.000000' AS hour,
               '' AS model, 1 AS calls, (c.exception IS NOT NULL) AS errors, 0 AS images,
               0.0 AS cost, 0 AS unpriced
        FROM calls AS c WHERE c.deleted_at IS NULL
        UNION ALL
        SELECT c.project_id, substr(c.started_at, 1, 13) || ':00:00.000000', j.key, 1, 0,
          CASE WHEN json_type(j.value, '$.images') = 'integer'
               THEN json_extract(j.value, '$.images') ELSE 0 END,
          CASE WHEN json_type(j.value, '$.total_cost') IN ('integer', 'real')
               THEN json_extract(j.value, '$.total_cost') ELSE 0 END,
          CASE WHEN json_type(j.value, '$.total_cost') IN ('integer', 'real')
               THEN 0 ELSE 1 END
        FROM calls AS c, json_each(c.summary, '$.costs') AS j
        WHERE c.deleted_at IS NULL AND json_type(c.summary, '$.costs') = 'object'
    ) GROUP BY 1, 2, 3
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    hour = sa.DateTime(timezone=True)
    op.create_table(
        "call_rollups",
        sa.Column("project_id", sa.String(200), nullable=False),
        sa.Column("hour", hour, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("images", sa.BigInteger, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("unpriced", sa.BigInteger, nullable=False),
    )
    # Unique on SQLite (its triggers upsert); PostgreSQL keeps deltas (see above).
    op.create_index(
        "ix_call_rollups_key",
        "call_rollups",
        ["project_id", "hour", "model"],
        unique=dialect == "sqlite",
    )
    if dialect == "postgresql":
        _postgresql()
    else:
        _sqlite()


def _postgresql() -> None:
    def deltas(*sources: str) -> str:
        src = "(" + " UNION ALL ".join(sources) + ")"
        return PG_DELTAS.format(src=src, hour=PG_HOUR)

    new = LIVE.format(sign=1, rows="new_rows")
    old = LIVE.format(sign=-1, rows="old_rows")
    op.execute(
        PG_FUNCTION.format(
            columns=COLUMNS, insert=deltas(new), delete=deltas(old), update=deltas(old, new)
        )
    )
    op.execute(
        "CREATE TRIGGER calls_rollup_insert AFTER INSERT ON calls "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION calls_rollup()"
    )
    op.execute(
        "CREATE TRIGGER calls_rollup_update AFTER UPDATE ON calls "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION calls_rollup()"
    )
    op.execute(
        "CREATE TRIGGER calls_rollup_delete AFTER DELETE ON calls "
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION calls_rollup()"
    )
    backfill = deltas(LIVE.format(sign=1, rows="calls"))
    op.execute(f"INSERT INTO call_rollups ({COLUMNS}) {backfill}")


def _sqlite() -> None:
    def add(row: str, sign: int) -> str:
        hour = SQLITE_HOUR.format(row=row)
        return SQLITE_ADD.format(
            columns=COLUMNS, row=row, hour=hour, sign=sign, upsert=SQLITE_UPSERT
        )

    op.execute(
        f"CREATE TRIGGER calls_rollup_insert AFTER INSERT ON calls BEGIN {add('NEW', 1)} END"
    )
    op.execute(
        "CREATE TRIGGER calls_rollup_update AFTER UPDATE OF project_id, started_at, exception,"
        f" summary, deleted_at ON calls BEGIN {add('OLD', -1)} {add('NEW', 1)} END"
    )
    op.execute(
        f"CREATE TRIGGER calls_rollup_delete AFTER DELETE ON calls BEGIN {add('OLD', -1)} END"
    )
    op.execute(SQLITE_BACKFILL.format(columns=COLUMNS))


def downgrade() -> None:
    for name in ("calls_rollup_insert", "calls_rollup_update", "calls_rollup_delete"):
        op.execute(
            f"DROP TRIGGER IF EXISTS {name}"
            + (" ON calls" if op.get_bind().dialect.name == "postgresql" else "")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS calls_rollup()")
    op.drop_table("call_rollups")
