"""API keys get an optional default project (where OpenAI-door requests go).

Revision ID: 0006_openai_door
Revises: 0005_weave_objects
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_openai_door"
down_revision = "0005_weave_objects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("default_project", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("default_project")
