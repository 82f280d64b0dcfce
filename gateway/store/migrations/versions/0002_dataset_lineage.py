"""Dataset lineage: content hashes, counts, split paths, and the source interaction ids.

Revision ID: 0002_dataset_lineage
Revises: 0001
Create Date: 2025-01-02

``datasets`` gains ``format``-independent facts about a built file (sha256 of the train
and validation files, their paths, counts, where it came from), and
``dataset_records`` links a dataset to every interaction it was built from, with the
split it went to, so an adapter can be traced to the traffic it learned from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_dataset_lineage"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))  # "log" | "import"
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("val_path", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("val_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("val_rows", sa.Integer, nullable=True))
        batch.add_column(sa.Column("counts", JSONType, nullable=True))
    op.create_table(
        "dataset_records",
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("interaction_id", sa.String(96), nullable=False),
        sa.Column("split", sa.String(8), nullable=False),  # "train" | "val"
        sa.PrimaryKeyConstraint("dataset_id", "interaction_id"),
    )
    op.create_index("ix_dataset_records_interaction", "dataset_records", ["interaction_id"])


def downgrade() -> None:
    op.drop_index("ix_dataset_records_interaction", table_name="dataset_records")
    op.drop_table("dataset_records")
    with op.batch_alter_table("datasets") as batch:
        for name in ("counts", "val_rows", "val_sha256", "val_path", "sha256", "source"):
            batch.drop_column(name)
