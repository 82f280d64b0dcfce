"""Tables of the adapter lifecycle (issue 9): route history (promotion, rollback) and loop cycles.

On the data layer's one MetaData (``schema.metadata``); migration ``0004_loop`` creates them.

* ``route_history``: one row per route change made by promotion. ``before``/``after`` are
  the alias's model entry around the write; ``restore`` is the entry that was fully live
  before this deployment began (what a rollback writes back in one step, ``None`` = drop
  the database entry so the YAML's applies again).
* ``loop_cycles``: one row per run of the loop controller for an alias; ``stage`` is the
  last *finished* stage and ``state`` what the stages produced (dataset, job, adapter,
  evaluation...), so a re-run continues after the last finished stage.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from gateway.store.schema import metadata

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

route_history = sa.Table(
    "route_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(256), nullable=False),  # the alias
    sa.Column("action", sa.String(32), nullable=False),  # canary | promote | rollback | shadow | eval
    sa.Column("adapter_id", sa.String(64)),
    sa.Column("previous_adapter_id", sa.String(64)),
    sa.Column("before", JSONType),
    sa.Column("after", JSONType),
    sa.Column("restore", JSONType),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("rolled_back", sa.Float),
    sa.Index("ix_route_history_model_id", "model", "id"),
)

loop_cycles = sa.Table(
    "loop_cycles",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # loop | migrate
    sa.Column("stage", sa.String(32), nullable=False),  # last finished stage ("" = none)
    sa.Column("status", sa.String(16), nullable=False),  # running | done | rejected | failed
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("state", JSONType),
    sa.Column("error", sa.Text),
    sa.Index("ix_loop_cycles_model_created", "model", "created"),
)
