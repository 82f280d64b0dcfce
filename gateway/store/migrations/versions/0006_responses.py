"""Stored responses (the Responses API, ``POST /v1/responses``).

Revision ID: 0006_responses
Revises: 0005_audit
Create Date: 2026-12-08

See ``gateway/store/responses.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_responses"
down_revision = "0005_audit"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("project", sa.String(128), nullable=True),
        sa.Column("completion_id", sa.String(96), nullable=True),
        sa.Column("previous_response_id", sa.String(96), nullable=True),
        sa.Column("response", JSONType, nullable=False),
        sa.Column("input_items", JSONType, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("responses")
