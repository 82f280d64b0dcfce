"""The costs page's kept days: sums and latency percentiles of closed days.

Revision ID: 0010_cost_days
Revises: 0009_responses_by_completion
Create Date: 2026-12-07

A 90-day costs page grouped every interaction of the range on each view (4 to 6 s at a million rows).
Days before yesterday cannot change but by a late write, which drops them again; they are kept here
(``gateway/store/cost_days.py``). Filled on first view; empty after this migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_cost_days"
down_revision = "0009_responses_by_completion"
branch_labels = None
depends_on = None

LATENCY = ("latency_p50", "latency_p99", "ttft_p50", "ttft_p99")


def upgrade() -> None:
    op.create_table(
        "cost_days",
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("filled", sa.Float, nullable=False),
    )
    op.create_table(
        "cost_rollup",
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
    )
    op.create_table(
        "latency_days",
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("scope", sa.String(128), primary_key=True),
        *(sa.Column(name, sa.Float) for name in LATENCY),
        sa.Column("sampled", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for name in ("latency_days", "cost_rollup", "cost_days"):
        op.drop_table(name)
