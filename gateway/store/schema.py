"""Tables of the interaction log (SQLAlchemy Core).

This module is the current shape; migrations under ``migrations/versions`` create it.
A later issue that changes a table edits both (a new migration, never an edited one).
JSON columns are JSONB on PostgreSQL and JSON (text) on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

interactions = sa.Table(
    "interactions",
    metadata,
    sa.Column("id", sa.String(96), primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("project", sa.String(128)),
    sa.Column("api_key_id", sa.String(128)),
    sa.Column("requested_model", sa.String(256), nullable=False, default=""),
    sa.Column("target", sa.String(128)),
    sa.Column("upstream_model", sa.String(256)),
    sa.Column("upstream_base_url", sa.String(512)),
    sa.Column("upstream_id", sa.String(256)),
    sa.Column("arm", sa.String(384)),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("stream", sa.Boolean, nullable=False, default=False),
    sa.Column("store", sa.Boolean, nullable=False, default=False),
    sa.Column("request", JSONType),
    sa.Column("response", JSONType),
    sa.Column("finish_reason", sa.String(32)),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("cached_tokens", sa.Integer),
    sa.Column("total_tokens", sa.Integer),
    sa.Column("ttft_s", sa.Float),
    sa.Column("latency_s", sa.Float),
    sa.Column("cost_usd", sa.Float),
    sa.Column("status", sa.Integer, nullable=False, default=200),
    sa.Column("error", JSONType),
    sa.Column("metadata", JSONType),
    sa.Column("kind", sa.String(16), nullable=False, default="primary"),
    sa.Column("parent_id", sa.String(96)),
    # migration 0007: the API, "chat.completion" or "text_completion" (POST /v1/completions)
    sa.Column("object", sa.String(32), nullable=False, server_default="chat.completion"),
    sa.Index("ix_interactions_created_id", "created", "id"),
    # Every index costs the writer (~15% insert rate each on SQLite): only what the
    # list API filters on, plus a partial one (shadow rows only) for deleting shadows.
    sa.Index("ix_interactions_requested_model", "requested_model", "created"),  # 0008: + created (newest first)
    sa.Index("ix_interactions_project_created", "project", "created"),
    sa.Index("ix_interactions_parent_id", "parent_id",
             sqlite_where=sa.text("parent_id IS NOT NULL"),
             postgresql_where=sa.text("parent_id IS NOT NULL")),
    sa.Index("ix_interactions_shadow_created", "created",  # 0011: the review queue's shadow calls, by time
             sqlite_where=sa.text("parent_id IS NOT NULL"),
             postgresql_where=sa.text("parent_id IS NOT NULL")),
)

# Several rows per completion; the newest of each kind (rating, correction...) counts.
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("completion_id", sa.String(96), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("project", sa.String(128)),
    sa.Column("rating", sa.Float),  # normalised to [-1, 1]
    sa.Column("rating_raw", sa.Float),  # as sent, on its scale
    sa.Column("rating_scale", sa.String(16)),  # "signed" | "stars"
    sa.Column("correction", JSONType),  # {"role": "assistant", "content": ...}
    sa.Column("comment", sa.Text),
    sa.Column("tags", JSONType),
    sa.Column("metadata", JSONType),
    sa.Index("ix_feedback_completion_created", "completion_id", "created"),
)

# --- Tables for later issues (datasets, fine-tuning, registry, routing, auth). ---

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # "sft" | "dpo" | "prompt_completion" (0007: 32 wide)
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("project", sa.String(128)),
    sa.Column("path", sa.String(1024)),
    sa.Column("rows", sa.Integer),
    sa.Column("filters", JSONType),
    sa.Column("report", JSONType),
    # lineage columns, migration 0002
    sa.Column("source", sa.String(16)),  # "log" | "import"
    sa.Column("sha256", sa.String(64)),
    sa.Column("val_path", sa.String(1024)),
    sa.Column("val_sha256", sa.String(64)),
    sa.Column("val_rows", sa.Integer),
    sa.Column("counts", JSONType),
    # migration 0005: set when interactions it was built from were erased (gateway/store/forget.py)
    sa.Column("stale", JSONType),
    sa.Index("ix_datasets_created", "created"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # "ftjob-..."
    sa.Column("backend", sa.String(32), nullable=False),  # "openai" | "local"
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float),
    sa.Column("project", sa.String(128)),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("training_file", sa.String(256)),
    sa.Column("validation_file", sa.String(256)),
    sa.Column("dataset_id", sa.String(64)),
    sa.Column("fine_tuned_model", sa.String(256)),
    sa.Column("external_id", sa.String(256)),  # e.g. OpenAI's job id
    sa.Column("method", JSONType),
    sa.Column("metadata", JSONType),
    sa.Column("error", JSONType),
    sa.Column("events", JSONType),  # unused: events have their own table since 0003
    # fine-tuning columns, migration 0003
    sa.Column("suffix", sa.String(64)),
    sa.Column("seed", sa.Integer),
    sa.Column("trained_tokens", sa.Integer),
    sa.Column("finished", sa.Float),
    sa.Column("result_files", JSONType),
    sa.Column("worker_pid", sa.Integer),
    sa.Column("cancel_requested", sa.Boolean),
    sa.Index("ix_jobs_created", "created"),
    sa.Index("ix_jobs_status", "status"),
)

adapters = sa.Table(
    "adapters",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("base_model", sa.String(256), nullable=False),
    sa.Column("path", sa.String(1024)),
    sa.Column("job_id", sa.String(64)),
    sa.Column("status", sa.String(32), nullable=False),  # candidate|canary|live|retired
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("metrics", JSONType),
    sa.UniqueConstraint("name", "version", name="uq_adapters_name_version"),
)

routes = sa.Table(
    "routes",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),  # the alias clients send
    sa.Column("config", JSONType, nullable=False),  # routes + fallbacks, as in the YAML
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("updated", sa.Float, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(128), nullable=False),
    sa.Column("name", sa.String(256)),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16)),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("revoked", sa.Float),
    sa.Column("limits", JSONType),
    sa.Column("expires", sa.Float),  # migration 0005: after it, the key is refused (None: never)
    sa.Index("ix_api_keys_project", "project"),
)
