"""Legacy completions (POST /v1/completions) in the log: the API of each interaction, and room for
the ``prompt_completion`` dataset kind.

Revision ID: 0007_text_completions
Revises: 0006_responses
Create Date: 2026-12-10

``interactions.object`` is ``chat.completion`` (every row before this one: the server default) or
``text_completion``; ``datasets.kind`` widens to 32 characters (``prompt_completion`` is 17).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_text_completions"
down_revision = "0006_responses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:  # SQLite: a plain ADD COLUMN, no table copy
        batch.add_column(sa.Column("object", sa.String(32), nullable=False, server_default="chat.completion"))
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("kind", type_=sa.String(32), existing_type=sa.String(16), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("kind", type_=sa.String(16), existing_type=sa.String(32), existing_nullable=False)
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("object")
