"""Initial schema: accounts, projects, calls.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from imagegate.store.tables import JSONType, Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "entities",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "entity_id",
            sa.String(36),
            sa.ForeignKey("entities.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column(
            "entity_id",
            sa.String(36),
            sa.ForeignKey("entities.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("entity_id", "name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp, nullable=True),
    )
    op.create_table(
        "calls",
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
    )
    op.create_index("ix_calls_project_started", "calls", ["project_id", "started_at"])
    op.create_index("ix_calls_project_op", "calls", ["project_id", "op_name"])
    op.create_index("ix_calls_project_trace", "calls", ["project_id", "trace_id"])


def downgrade() -> None:
    for table in ("calls", "api_keys", "projects", "memberships", "entities", "users"):
        op.drop_table(table)
