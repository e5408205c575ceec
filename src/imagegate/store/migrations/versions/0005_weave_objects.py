"""Weave objects, tables and feedback; calls by parent, with thread, turn and run ids.

Revision ID: 0005_weave_objects
Revises: 0004_weave_shape
"""

import sqlalchemy as sa
from alembic import op

from imagegate.store.tables import JSONType, Timestamp

revision = "0005_weave_objects"
down_revision = "0004_weave_shape"
branch_labels = None
depends_on = None


def _project() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "project_id",
        sa.String(200),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.create_table(
        "objects",
        _project(),
        sa.Column("object_id", sa.String(256), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("base_object_class", sa.String(128), nullable=True),
        sa.Column("leaf_object_class", sa.String(128), nullable=True),
        sa.Column("val", JSONType, nullable=True),
        sa.Column("version_index", sa.Integer, nullable=False),
        sa.Column("is_latest", sa.Integer, nullable=False),
        sa.Column("wb_user_id", sa.String(36), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("deleted_at", Timestamp, nullable=True),
    )
    op.create_index("ix_objects_project_created", "objects", ["project_id", "created_at"])
    op.create_table(
        "table_rows",
        _project(),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("val", JSONType, nullable=True),
    )
    op.create_table(
        "weave_tables",
        _project(),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("row_digests", JSONType, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "feedback",
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
    )
    op.create_index("ix_feedback_project_ref", "feedback", ["project_id", "weave_ref"])
    with op.batch_alter_table("calls") as calls:
        calls.add_column(sa.Column("thread_id", sa.String(128), nullable=True))
        calls.add_column(sa.Column("turn_id", sa.String(128), nullable=True))
        calls.add_column(sa.Column("wb_run_id", sa.String(256), nullable=True))
    # Trees by trace and children by parent: the Traces page and `parent_ids` filters.
    op.create_index("ix_calls_project_parent", "calls", ["project_id", "parent_id"])


def downgrade() -> None:
    op.drop_index("ix_calls_project_parent", "calls")
    with op.batch_alter_table("calls") as calls:
        calls.drop_column("wb_run_id")
        calls.drop_column("turn_id")
        calls.drop_column("thread_id")
    op.drop_table("feedback")
    op.drop_table("weave_tables")
    op.drop_table("table_rows")
    op.drop_table("objects")
