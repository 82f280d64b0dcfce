"""Shadow calls found by time: the review queue's "shadow disagrees".

Revision ID: 0011_shadow_created
Revises: 0010_cost_days
Create Date: 2026-12-07

The review queue starts from the shadow calls of its window (the last 14 days), newest first. Partial
(rows with a ``parent_id``: shadow calls only, ~3% of the log), so the writer pays for it on those alone.
At a million interactions: the queue's next shadow disagreement 0.26 s → 0.05 s on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_shadow_created"
down_revision = "0010_cost_days"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_interactions_shadow_created", "interactions", ["created"],
                    sqlite_where=sa.text("parent_id IS NOT NULL"), postgresql_where=sa.text("parent_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_interactions_shadow_created", table_name="interactions")
