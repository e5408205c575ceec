"""Reads at scale: a stored status, indexes that match the sorts, prompt search.

- `calls.status`, a generated column (error / running / success), so "status == error"
  is an index range instead of a CASE over every row. The database derives it on every
  write, whichever code path writes.
- Partial indexes on live calls (`deleted_at IS NULL`, which every read asks for) that
  end in `(started_at DESC, id)`: newest-first pages (`ORDER BY started_at DESC, id`)
  read the index in order and stop after `limit` rows, with no sort. Oldest-first reads
  scan it backwards and only order calls started in the same instant.
- `calls.model`, a generated column: `inputs.model` as text when at most 200 characters
  (longer ones stay NULL: a B-tree entry has a size limit), and an index on it (the
  gallery's model filter, counts per model). A column, not an expression index, because
  PostgreSQL never answers from an expression index alone: counting a model's calls
  would read every one of them from the table.
- PostgreSQL: a trigram index on `inputs.prompt`, for `$contains` (ILIKE). It needs the
  pg_trgm extension; where that cannot be created, prompt search still works, by scan.
- SQLite: `calls_prompt_fts`, an FTS5 trigram table of `inputs.prompt` kept by triggers,
  which narrows a `$contains` on the prompt to the calls that can match.

Works on a database that already holds calls: the column is computed for every row,
and the indexes are built from them.

Revision ID: 0009_read_indexes
Revises: 0008_teams
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_read_indexes"
down_revision = "0008_teams"
branch_labels = None
depends_on = None

STATUS = (
    "CASE WHEN exception IS NOT NULL THEN 'error' "
    "WHEN ended_at IS NULL THEN 'running' ELSE 'success' END"
)
LIVE = "WHERE deleted_at IS NULL"
# Spelled exactly as the query compiler writes `inputs.model` as text (query.py).
MODEL_TEXT = {
    "postgresql": "(inputs ->> 'model')",
    "sqlite": """CAST(json_extract(inputs, '$."model"') AS VARCHAR)""",
}
MODEL_MAX = 200
INDEXES = {
    "ix_calls_live_started": "project_id, started_at DESC, id",
    "ix_calls_live_status": "project_id, status, started_at DESC, id",
    "ix_calls_live_user": "project_id, wb_user_id, started_at DESC, id",
    "ix_calls_live_model": "project_id, model, started_at DESC, id",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # PostgreSQL only stores generated columns; SQLite can only add virtual ones (their
    # values are still stored in the indexes below).
    kind = "STORED" if dialect == "postgresql" else "VIRTUAL"
    text = MODEL_TEXT[dialect]
    model = f"CASE WHEN length({text}) <= {MODEL_MAX} THEN {text} END"
    columns = [
        f"ADD COLUMN status VARCHAR(16) GENERATED ALWAYS AS ({STATUS}) {kind}",
        f"ADD COLUMN model TEXT GENERATED ALWAYS AS ({model}) {kind}",
    ]
    if dialect == "postgresql":  # both in one statement: one rewrite of the table
        op.execute("ALTER TABLE calls " + ", ".join(columns))
    else:  # SQLite adds one column per statement
        for column in columns:
            op.execute(f"ALTER TABLE calls {column}")
    op.execute("DROP INDEX ix_calls_project_started")  # ix_calls_live_started replaces it
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON calls ({columns}) {LIVE}")
    if dialect == "postgresql" and _pg_trgm():
        op.execute(
            "CREATE INDEX ix_calls_live_prompt_trgm ON calls "
            f"USING gin ((inputs ->> 'prompt') gin_trgm_ops) {LIVE}"
        )
    if dialect == "sqlite":
        for statement in SQLITE_PROMPT_FTS:
            op.execute(statement)
        op.execute(
            "INSERT INTO calls_prompt_fts (rowid, id, prompt) SELECT rowid, id, "
            """json_extract(inputs, '$."prompt"') FROM calls """
            """WHERE json_type(inputs, '$."prompt"') = 'text'"""
        )
        _sqlite_stats()


# Frozen copy of tables.py's SQLITE_PROMPT_FTS (create_all makes the same for tests).
_PROMPT = """json_extract(NEW.inputs, '$."prompt"')"""
_IS_TEXT = """json_type(NEW.inputs, '$."prompt"') = 'text'"""
SQLITE_PROMPT_FTS = (
    "CREATE VIRTUAL TABLE calls_prompt_fts USING fts5(id UNINDEXED, prompt, tokenize='trigram')",
    "CREATE TRIGGER calls_prompt_fts_insert AFTER INSERT ON calls WHEN "
    f"{_IS_TEXT} BEGIN INSERT INTO calls_prompt_fts (rowid, id, prompt) "
    f"VALUES (NEW.rowid, NEW.id, {_PROMPT}); END",
    "CREATE TRIGGER calls_prompt_fts_delete AFTER DELETE ON calls BEGIN "
    "DELETE FROM calls_prompt_fts WHERE rowid = OLD.rowid; END",
    "CREATE TRIGGER calls_prompt_fts_update AFTER UPDATE OF inputs ON calls BEGIN "
    "DELETE FROM calls_prompt_fts WHERE rowid = OLD.rowid; "
    f"INSERT INTO calls_prompt_fts (rowid, id, prompt) SELECT NEW.rowid, NEW.id, {_PROMPT} "
    f"WHERE {_IS_TEXT}; END",
)


# SQLite plans without statistics until someone runs ANALYZE, and then guesses ten rows
# per project: it would walk a project's newest-first index for a prompt search instead
# of reading the trigram table's few candidates. These rows describe the shape instead
# (projects of many calls, a few models, statuses and users); ANALYZE replaces them
# with measured ones, which lead to the same plans.
SQLITE_STATS = {
    None: "1000000",
    "sqlite_autoindex_calls_1": "1000000 1",
    "ix_calls_live_started": "1000000 100000 1 1",
    "ix_calls_live_status": "1000000 100000 30000 1 1",
    "ix_calls_live_user": "1000000 100000 5000 1 1",
    "ix_calls_live_model": "1000000 100000 20000 1 1",
    "ix_calls_project_op": "1000000 100000 50000",
    "ix_calls_project_trace": "1000000 100000 1",
    # Most calls are roots (parent_id NULL): with a guess of a few rows per parent,
    # SQLite read every root of a project and sorted them for the Traces page.
    "ix_calls_project_parent": "1000000 100000 20000",
}


def _sqlite_stats() -> None:
    conn = op.get_bind()
    if not conn.scalar(sa.text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")):
        conn.execute(sa.text("ANALYZE sqlite_master"))  # creates sqlite_stat1, empty
    names = "SELECT name FROM sqlite_master WHERE tbl_name = 'calls' AND type = 'index'"
    stats: dict[str | None, str] = {None: SQLITE_STATS[None]}
    for index in conn.scalars(sa.text(names)):
        # An index this list does not know: by project, then not very selective, so it
        # does not win over the sort's index on a guess.
        width = len(conn.execute(sa.text(f"PRAGMA index_info('{index}')")).all())
        fallback = "1000000 100000" + " 20000" * min(1, width - 1) + " 1" * max(0, width - 2)
        stats[index] = SQLITE_STATS.get(index, fallback)
    conn.execute(sa.text("DELETE FROM sqlite_stat1 WHERE tbl = 'calls'"))
    for index, stat in stats.items():
        conn.execute(
            sa.text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('calls', :i, :s)"),
            {"i": index, "s": stat},
        )
    conn.execute(sa.text("ANALYZE sqlite_master"))  # and this connection reloads them


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
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS calls_prompt_fts_{name}")
        op.execute("DROP TABLE IF EXISTS calls_prompt_fts")
    for name in ("ix_calls_live_prompt_trgm", *INDEXES):
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute("CREATE INDEX ix_calls_project_started ON calls (project_id, started_at)")
    op.execute("ALTER TABLE calls DROP COLUMN model")
    op.execute("ALTER TABLE calls DROP COLUMN status")
