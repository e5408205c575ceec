"""Teams: roles, server admins, the audit log, budgets and rate-limit windows.

Revision ID: 0008_teams
Revises: 0007_sessions (re-chained on merging; given as 0003)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008_teams"
down_revision = "0007_sessions"
branch_labels = None
depends_on = None

# Frozen here, not imported: later changes to the live schema must not change this step.
_Timestamp = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN, never batch mode: on SQLite a batch rebuilds the
    # table (drop and rename), and dropping `users` would cascade to every key and
    # membership.
    op.add_column(
        "users", sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column(
        "memberships", sa.Column("role", sa.String(16), nullable=False, server_default="member")
    )
    # The user made on first start administers the server; everyone owns their own
    # entity, and stays a member of the others.
    op.execute("UPDATE users SET is_admin = true WHERE name = 'admin'")
    op.execute(
        "UPDATE memberships SET role = 'owner' WHERE EXISTS (SELECT 1 FROM users u, entities e"
        " WHERE u.id = memberships.user_id AND e.id = memberships.entity_id AND u.name = e.name)"
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("at", _Timestamp, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("details", _JSON, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("limit_usd", sa.Float, nullable=False),
        sa.Column("hard", sa.Boolean, nullable=False),
        sa.Column("updated_at", _Timestamp, nullable=False),
        sa.UniqueConstraint("scope", "target", name="uq_budgets_scope_target"),
    )
    op.create_table(
        "budget_windows",
        sa.Column(
            "budget_id",
            sa.String(36),
            sa.ForeignKey(
                "budgets.id", ondelete="CASCADE", name="fk_budget_windows_budget_id_budgets"
            ),
            primary_key=True,
        ),
        sa.Column("window_start", _Timestamp, primary_key=True),
        sa.Column("spent_usd", sa.Float, nullable=False),
        sa.Column("reserved_usd", sa.Float, nullable=False),
    )
    op.create_table(
        "rate_windows",
        sa.Column("subject", sa.String(256), primary_key=True),
        sa.Column("window_start", _Timestamp, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_windows")
    op.drop_table("budget_windows")
    op.drop_table("budgets")
    op.drop_table("audit_log")
    op.drop_column("memberships", "role")  # SQLite 3.35+ drops columns in place
    op.drop_column("users", "is_admin")
