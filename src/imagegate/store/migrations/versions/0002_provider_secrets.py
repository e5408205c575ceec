"""Provider keys per entity, encrypted at rest.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from imagegate.store.tables import Timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_secrets",
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


def downgrade() -> None:
    op.drop_table("provider_secrets")
