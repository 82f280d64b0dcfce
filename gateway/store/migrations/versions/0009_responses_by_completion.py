"""Stored responses found by the chat completion they were served as.

Revision ID: 0009_responses_by_completion
Revises: 0008_console
Create Date: 2026-12-07

Erasing a completion (``tuneloop forget``, ``gateway.store.forget``) deletes its stored responses
``WHERE completion_id IN (...)``: without this index that scanned the whole table.
"""

from __future__ import annotations

from alembic import op

revision = "0009_responses_by_completion"
down_revision = "0008_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_responses_completion_id", "responses", ["completion_id"])


def downgrade() -> None:
    op.drop_index("ix_responses_completion_id", table_name="responses")
