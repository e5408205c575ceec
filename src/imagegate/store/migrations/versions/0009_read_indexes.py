"""Reads at scale: a stored status, indexes that match the sorts, prompt search.

- `calls.status`, a generated column (error / running / success), so "status == error"
  is an index range instead of a CASE over every row. The database derives it on every
  write, whichever code path writes.
- Partial indexes on live calls (`deleted_at IS NULL`, which every read asks for) that
  end in `(started_at DESC, id)`: newest-first pages (`ORDER BY started_at DESC, id`)
  read the index in order and stop after `limit` rows, with no sort. Oldest-first reads
  scan it backwards and only order calls started in the same instant.
- `inputs.model` as an expression index (the gallery's model filter, counts per model).
- PostgreSQL: a trigram index on `inputs.prompt`, for `$contains` (ILIKE). It needs the
  pg_trgm extension; where that cannot be created, prompt search still works, by scan.

Works on a database that already holds calls: the column is computed for every row,
and the indexes are built from them.

Revision ID: 0009_read_indexes
Revises: 0005_weave_objects
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_read_indexes"
down_revision = "0005_weave_objects"
branch_labels = None
depends_on = None

STATUS = (
    "CASE WHEN exception IS NOT NULL THEN 'error' "
    "WHEN ended_at IS NULL THEN 'running' ELSE 'success' END"
)
LIVE = "WHERE deleted_at IS NULL"
# Spelled exactly as the query compiler writes `inputs.model` as text (query.py).
MODEL = {
    "postgresql": "(inputs ->> 'model')",
    "sqlite": """CAST(json_extract(inputs, '$."model"') AS VARCHAR)""",
}
INDEXES = {
    "ix_calls_live_started": "project_id, started_at DESC, id",
    "ix_calls_live_status": "project_id, status, started_at DESC, id",
    "ix_calls_live_user": "project_id, wb_user_id, started_at DESC, id",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # PostgreSQL only stores generated columns; SQLite can only add virtual ones (their
    # values are still stored in the indexes below).
    kind = "STORED" if dialect == "postgresql" else "VIRTUAL"
    op.execute(
        f"ALTER TABLE calls ADD COLUMN status VARCHAR(16) GENERATED ALWAYS AS ({STATUS}) {kind}"
    )
    op.execute("DROP INDEX ix_calls_project_started")  # ix_calls_live_started replaces it
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON calls ({columns}) {LIVE}")
    op.execute(
        f"CREATE INDEX ix_calls_live_model ON calls "
        f"(project_id, {MODEL[dialect]}, started_at DESC, id) {LIVE}"
    )
    if dialect == "postgresql" and _pg_trgm():
        op.execute(
            "CREATE INDEX ix_calls_live_prompt_trgm ON calls "
            f"USING gin ((inputs ->> 'prompt') gin_trgm_ops) {LIVE}"
        )


def _pg_trgm() -> bool:
    """Create pg_trgm if this role may (it is a trusted extension from PostgreSQL 13)."""
    conn = op.get_bind()
    if conn.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")):
        return True
    if not conn.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")):
        return False
    try:
        with conn.begin_nested():
            conn.execute(sa.text("CREATE EXTENSION pg_trgm"))
    except sa.exc.DBAPIError:
        return False
    return True


def downgrade() -> None:
    for name in ("ix_calls_live_prompt_trgm", "ix_calls_live_model", *INDEXES):
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute("CREATE INDEX ix_calls_project_started ON calls (project_id, started_at)")
    op.execute("ALTER TABLE calls DROP COLUMN status")
