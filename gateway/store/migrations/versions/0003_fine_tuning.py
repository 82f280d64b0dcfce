"""Fine-tuning: job fields OpenAI's ``FineTuningJob`` reports, job events, checkpoints, files.

Revision ID: 0003_fine_tuning
Revises: 0002_dataset_lineage
Create Date: 2025-01-03

``jobs`` gains what a ``fine_tuning.job`` shows (suffix, seed, trained tokens, finish
time, result files) plus the worker's bookkeeping (its pid, a cancel request that the
training loop checks between steps). Events and checkpoints get tables of their own
(append-only, paged by id), and ``files`` holds uploaded files' metadata (the bytes live
under ``$TUNELOOP_HOME/files``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_fine_tuning"
down_revision = "0002_dataset_lineage"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("suffix", sa.String(64), nullable=True))
        batch.add_column(sa.Column("seed", sa.Integer, nullable=True))
        batch.add_column(sa.Column("trained_tokens", sa.Integer, nullable=True))
        batch.add_column(sa.Column("finished", sa.Float, nullable=True))
        batch.add_column(sa.Column("result_files", JSONType, nullable=True))
        batch.add_column(sa.Column("worker_pid", sa.Integer, nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean, nullable=True))
    op.create_table(
        "job_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", JSONType, nullable=True),
    )
    op.create_index("ix_job_events_job_seq", "job_events", ["job_id", "seq"])
    op.create_table(
        "job_checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Column("metrics", JSONType, nullable=True),
    )
    op.create_index("ix_job_checkpoints_job_step", "job_checkpoints", ["job_id", "step"])
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("project", sa.String(128), nullable=True),
        sa.Column("expires", sa.Float, nullable=True),
    )
    op.create_index("ix_files_created", "files", ["created"])


def downgrade() -> None:
    op.drop_index("ix_files_created", table_name="files")
    op.drop_table("files")
    op.drop_index("ix_job_checkpoints_job_step", table_name="job_checkpoints")
    op.drop_table("job_checkpoints")
    op.drop_index("ix_job_events_job_seq", table_name="job_events")
    op.drop_table("job_events")
    with op.batch_alter_table("jobs") as batch:
        for name in ("cancel_requested", "worker_pid", "result_files", "finished", "trained_tokens",
                     "seed", "suffix"):
            batch.drop_column(name)
