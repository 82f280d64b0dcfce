"""The audit trail, datasets marked stale when data they were built from is erased, keys that expire.

Revision ID: 0005_audit
Revises: 0004_loop
Create Date: 2026-12-06

See ``gateway/store/audit.py`` and ``gateway/store/forget.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_audit"
down_revision = "0004_loop"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=True),
        sa.Column("detail", JSONType, nullable=True),
    )
    op.create_index("ix_audit_log_created", "audit_log", ["created"])
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("stale", JSONType, nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("stale")
    op.drop_index("ix_audit_log_created", table_name="audit_log")
    op.drop_table("audit_log")
