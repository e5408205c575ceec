"""Browser sessions kept on the server, so signing out ends a session everywhere.

Revision ID: 0007_sessions
Revises: 0006_openai_door
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_sessions"
down_revision = "0006_openai_door"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Frozen here: timestamps as the live schema's UTC type stores them (naive UTC text on
    # SQLite, timestamptz on PostgreSQL).
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_index("ix_web_sessions_key_hash", "web_sessions", ["key_hash"])


def downgrade() -> None:
    op.drop_table("web_sessions")
