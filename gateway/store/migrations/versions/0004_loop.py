"""The adapter lifecycle: route history (promotion, rollback) and loop cycles.

Revision ID: 0004_loop
Revises: 0003_fine_tuning
Create Date: 2025-01-04

See ``gateway/store/loop_schema.py`` for what the columns mean.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_loop"
down_revision = "0003_fine_tuning"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "route_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("adapter_id", sa.String(64), nullable=True),
        sa.Column("previous_adapter_id", sa.String(64), nullable=True),
        sa.Column("before", JSONType, nullable=True),
        sa.Column("after", JSONType, nullable=True),
        sa.Column("restore", JSONType, nullable=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("rolled_back", sa.Float, nullable=True),
    )
    op.create_index("ix_route_history_model_id", "route_history", ["model", "id"])
    op.create_table(
        "loop_cycles",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("state", JSONType, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_loop_cycles_model_created", "loop_cycles", ["model", "created"])


def downgrade() -> None:
    op.drop_index("ix_loop_cycles_model_created", table_name="loop_cycles")
    op.drop_table("loop_cycles")
    op.drop_index("ix_route_history_model_id", table_name="route_history")
    op.drop_table("route_history")
