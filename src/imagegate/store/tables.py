"""The relational schema, shared by every SQL backend.

Written in SQLAlchemy Core with portable types only, so the same tables (and the same
Alembic migrations) serve SQLite and PostgreSQL. JSON columns become JSONB on
PostgreSQL so the calls query API can index into them there too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no timezone type: SQLAlchemy stores naive text there. Normalising to UTC
    on the way in and re-attaching UTC on the way out makes both backends return the
    same aware values, and keeps SQLite's text ordering chronological.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = UTCDateTime()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    # Server admins manage every user, team, key and budget.
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
)

entities = sa.Table(
    "entities",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "entity_id",
        sa.String(36),
        sa.ForeignKey("entities.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("created_at", Timestamp, nullable=False),
    # owner (manages members and budgets), member (generates), viewer (reads only).
    sa.Column("role", sa.String(16), nullable=False, server_default="member"),
)

# `id` is the wire form "entity/project": it is what every request names, and
# projects are never renamed, so a surrogate key would only add a join.
projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column(
        "entity_id", sa.String(36), sa.ForeignKey("entities.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("entity_id", "name"),
)

# Only a hash of each key is kept; `prefix` lets `keys list` show which key is which.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp, nullable=True),
    # "entity/project" a request with this key goes to when it names none (the OpenAI door).
    sa.Column("default_project", sa.String(200), nullable=True),
)

# A call's status, as the database derives it (a generated column). The migration makes
# it VIRTUAL on SQLite (ALTER TABLE cannot add a stored one); its indexes store it.
CALL_STATUS_SQL = (
    "CASE WHEN exception IS NOT NULL THEN 'error' "
    "WHEN ended_at IS NULL THEN 'running' ELSE 'success' END"
)
# inputs.model as text (as the query compiler reads it, per backend), when at most
# MODEL_MAX characters: the `model` column, so counts per model are index-only scans
# on PostgreSQL (it never reads an expression index alone). Longer names stay NULL
# there (a B-tree entry has a size limit), and queries for them read inputs instead.
MODEL_MAX = 200
_MODEL_TEXT = {
    "postgresql": "(inputs ->> 'model')",
    "sqlite": """CAST(json_extract(inputs, '$."model"') AS VARCHAR)""",
}
CALL_MODEL_SQL = {
    dialect: f"CASE WHEN length({text}) <= {MODEL_MAX} THEN {text} END"
    for dialect, text in _MODEL_TEXT.items()
}


class _CallModel(sa.sql.expression.ColumnElement[str]):
    """CALL_MODEL_SQL as a Computed column's expression, spelled for each backend."""

    inherit_cache = True
    type = sa.String()


@compiles(_CallModel)
def _render_call_model(_element: _CallModel, compiler: SQLCompiler, **_kw: Any) -> str:
    return CALL_MODEL_SQL.get(compiler.dialect.name, CALL_MODEL_SQL["postgresql"])


NEWEST = sa.text("started_at DESC")
LIVE: dict[str, Any] = {
    "postgresql_where": sa.text("deleted_at IS NULL"),
    "sqlite_where": sa.text("deleted_at IS NULL"),
}

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "project_id",
        sa.String(200),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("op_name", sa.String(256), nullable=False),
    sa.Column("display_name", sa.String(256), nullable=True),
    sa.Column("trace_id", sa.String(36), nullable=False),
    sa.Column("parent_id", sa.String(36), nullable=True),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=True),
    sa.Column("attributes", JSONType, nullable=False),
    sa.Column("inputs", JSONType, nullable=False),
    sa.Column("output", JSONType, nullable=True),
    sa.Column("summary", JSONType, nullable=True),
    sa.Column("exception", sa.Text, nullable=True),
    sa.Column("wb_user_id", sa.String(36), nullable=True),
    sa.Column("deleted_at", Timestamp, nullable=True),
    # What trace clients send for conversations and W&B runs (kept, and filterable).
    sa.Column("thread_id", sa.String(128), nullable=True),
    sa.Column("turn_id", sa.String(128), nullable=True),
    sa.Column("wb_run_id", sa.String(256), nullable=True),
    # Derived by the database on every write, whoever writes (see migration 0009).
    sa.Column("status", sa.String(16), sa.Computed(CALL_STATUS_SQL, persisted=True)),
    sa.Column("model", sa.Text, sa.Computed(_CallModel(), persisted=True)),
    # Reads always ask for live calls (deleted_at IS NULL) and end their sort with `id`,
    # so these partial indexes serve newest-first pages by a plain index scan. Migration
    # 0009 also indexes inputs.prompt by trigram on PostgreSQL.
    sa.Index("ix_calls_live_started", "project_id", NEWEST, "id", **LIVE),
    sa.Index("ix_calls_live_status", "project_id", "status", NEWEST, "id", **LIVE),
    sa.Index("ix_calls_live_user", "project_id", "wb_user_id", NEWEST, "id", **LIVE),
    sa.Index("ix_calls_live_model", "project_id", "model", NEWEST, "id", **LIVE),
    sa.Index("ix_calls_project_op", "project_id", "op_name"),
    sa.Index("ix_calls_project_trace", "project_id", "trace_id"),
    sa.Index("ix_calls_project_parent", "project_id", "parent_id"),
)

# SQLite: prompt search. An FTS5 trigram table of inputs.prompt (rowid = the call's
# rowid, kept by triggers) narrows `$contains` on the prompt to calls that can match;
# the exact test still runs on each. Migration 0009 makes it; so does create_all.
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
for _statement in SQLITE_PROMPT_FTS:
    sa.event.listen(calls, "after_create", sa.DDL(_statement).execute_if(dialect="sqlite"))
calls_prompt_fts = sa.table("calls_prompt_fts", sa.column("rowid"), sa.column("prompt"))

# Hourly figures of live calls per (project, hour of started_at, model), kept by
# database triggers on every write (migration 0010). Rows are signed deltas: a key may
# have several rows on PostgreSQL, so readers always sum. model "" counts all calls.
call_rollups = sa.Table(
    "call_rollups",
    metadata,
    sa.Column("project_id", sa.String(200), nullable=False),
    sa.Column("hour", Timestamp, nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("images", sa.BigInteger, nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("unpriced", sa.BigInteger, nullable=False),
    sa.Index("ix_call_rollups_key", "project_id", "hour", "model"),
)

# Provider keys per entity (OPENAI_API_KEY, ...), encrypted with the server's secret key:
# a copy of the database alone reveals none of them.
provider_secrets = sa.Table(
    "provider_secrets",
    metadata,
    sa.Column(
        "entity_id",
        sa.String(36),
        sa.ForeignKey("entities.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# Idempotency-Key / X-Weave-Retry-Id: one row per (project, user, key). The primary key
# is what makes "generated at most once" hold across replicas: a second claim's INSERT
# fails. `owner` names the running claim, so only its holder can renew or complete it.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("project_id", sa.String(200), primary_key=True),
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # "running" or "done"
    sa.Column("owner", sa.String(36), nullable=True),
    sa.Column("response", JSONType, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("lease_until", Timestamp, nullable=True),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
)

# Who did what to users, teams, memberships, keys, budgets and provider keys.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # a UUIDv7: ordered by time
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),  # a user name, or "cli"
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("details", JSONType, nullable=False),
    sa.Index("ix_audit_log_at", "at"),
)

# A spending limit for a project (`scope` "project", `target` "entity/project") or a
# team (`scope` "entity", `target` the entity's name), per day or month (UTC).
budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("period", sa.String(16), nullable=False),  # "daily" or "monthly"
    sa.Column("limit_usd", sa.Float, nullable=False),
    sa.Column("hard", sa.Boolean, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("scope", "target"),
)

# One row per budget and period: what was spent, and what running generations have
# reserved. The conditional UPDATE on this row is what keeps replicas within budget.
budget_windows = sa.Table(
    "budget_windows",
    metadata,
    sa.Column(
        "budget_id",
        sa.String(36),
        sa.ForeignKey("budgets.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("window_start", Timestamp, primary_key=True),
    sa.Column("spent_usd", sa.Float, nullable=False),
    sa.Column("reserved_usd", sa.Float, nullable=False),
)

# Rate limits: requests and images per key or project, per minute (fixed windows).
rate_windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("subject", sa.String(256), primary_key=True),  # "key:<id>", "project:<id>"
    sa.Column("window_start", Timestamp, primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("images", sa.Integer, nullable=False),
)

# Weave objects (ops, datasets, user objects): one row per version, content-addressed by
# the digest of `val`. `is_latest` marks the newest live version of each object_id.
objects = sa.Table(
    "objects",
    metadata,
    sa.Column(
        "project_id",
        sa.String(200),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("object_id", sa.String(256), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "op" or "object"
    sa.Column("base_object_class", sa.String(128), nullable=True),
    sa.Column("leaf_object_class", sa.String(128), nullable=True),
    sa.Column("val", JSONType, nullable=True),
    sa.Column("version_index", sa.Integer, nullable=False),
    sa.Column("is_latest", sa.Integer, nullable=False),
    sa.Column("wb_user_id", sa.String(36), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("deleted_at", Timestamp, nullable=True),
    sa.Index("ix_objects_project_created", "project_id", "created_at"),
)

# Weave tables: rows are content-addressed (shared between tables that hold the same
# row); a table is its ordered list of row digests, addressed by the digest of that list.
table_rows = sa.Table(
    "table_rows",
    metadata,
    sa.Column(
        "project_id",
        sa.String(200),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("val", JSONType, nullable=True),
)

weave_tables = sa.Table(
    "weave_tables",
    metadata,
    sa.Column(
        "project_id",
        sa.String(200),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("row_digests", JSONType, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

# Feedback on a call or object (reactions, notes, scores), as Weave's feedback API has it.
# The scorer/span fields Weave carries but imagegate never interprets stay in `extra`.
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "project_id",
        sa.String(200),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("weave_ref", sa.String(1024), nullable=False),
    sa.Column("feedback_type", sa.String(256), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("creator", sa.String(256), nullable=True),
    sa.Column("annotation_ref", sa.String(1024), nullable=True),
    sa.Column("runnable_ref", sa.String(1024), nullable=True),
    sa.Column("call_ref", sa.String(1024), nullable=True),
    sa.Column("trigger_ref", sa.String(1024), nullable=True),
    sa.Column("queue_id", sa.String(64), nullable=True),
    sa.Column("extra", JSONType, nullable=False),
    sa.Column("wb_user_id", sa.String(36), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_feedback_project_ref", "project_id", "weave_ref"),
)

# A browser session: the cookie holds a random token, this table its hash and the hash of
# the API key it was opened with (revoking the key ends it too). Signing out deletes it.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False, index=True),
)
