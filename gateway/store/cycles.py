"""Loop cycles: the controller's persisted progress, and the feedback count that starts one.

    store = CycleStore(engine)
    cycle = store.open_cycle("support-bot")          # the unfinished one, or None
    store.finish_stage(cycle["id"], "train", {"job_id": ...})
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import sqlalchemy as sa

from gateway.store.loop_schema import loop_cycles as t
from gateway.store.schema import feedback, interactions


class CycleStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, model: str, kind: str = "loop", state: dict[str, Any] | None = None) -> dict[str, Any]:
        now = time.time()
        row = {"id": f"cycle-{secrets.token_hex(8)}", "model": model, "kind": kind, "stage": "",
               "status": "running", "created": now, "updated": now, "state": state or {}, "error": None}
        with self.engine.begin() as conn:
            conn.execute(t.insert().values(**row))
        return row

    def get(self, cycle_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(t.select().where(t.c.id == cycle_id)).mappings().first()
        return dict(row) if row else None

    def open_cycle(self, model: str, kind: str = "loop") -> dict[str, Any] | None:
        """The newest cycle of ``model`` still running (a crash left it so), if any."""
        q = (t.select().where(t.c.model == model, t.c.kind == kind, t.c.status == "running")
             .order_by(t.c.created.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def last_finished(self, model: str, kind: str = "loop") -> dict[str, Any] | None:
        q = (t.select().where(t.c.model == model, t.c.kind == kind, t.c.status != "running")
             .order_by(t.c.created.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def list(self, model: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        q = t.select().order_by(t.c.created.desc()).limit(limit)
        if model:
            q = q.where(t.c.model == model)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def finish_stage(self, cycle_id: str, stage: str, updates: dict[str, Any]) -> dict[str, Any]:
        """Record ``stage`` as done with what it produced, in one write."""
        with self.engine.begin() as conn:
            state = conn.execute(sa.select(t.c.state).where(t.c.id == cycle_id)).scalar() or {}
            state = {**state, **updates}
            conn.execute(t.update().where(t.c.id == cycle_id)
                         .values(stage=stage, state=state, updated=time.time(), error=None))
        return state

    def update_state(self, cycle_id: str, updates: dict[str, Any]) -> dict[str, Any]:
        """Progress inside a stage (e.g. the job id once created), without finishing it."""
        with self.engine.begin() as conn:
            state = conn.execute(sa.select(t.c.state).where(t.c.id == cycle_id)).scalar() or {}
            state = {**state, **updates}
            conn.execute(t.update().where(t.c.id == cycle_id).values(state=state, updated=time.time()))
        return state

    def end(self, cycle_id: str, status: str, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == cycle_id)
                         .values(status=status, error=error, updated=time.time()))

    def note_error(self, cycle_id: str, error: str) -> None:
        """A stage raised: the cycle stays ``running`` (resumable) with the reason shown."""
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == cycle_id).values(error=error[-4000:], updated=time.time()))


def feedback_count(engine: sa.Engine, model: str, since: float | None = None,
                   projects: list[str] | None = None) -> int:
    """Feedback rows (ratings or corrections) on ``model``'s primary chat completions (what the loop
    trains on: not text completions) since ``since``; ``projects``: only their traffic and feedback
    (gateway.store.owners)."""
    from gateway.store.owners import feedback_of, interactions_of

    q = (sa.select(sa.func.count()).select_from(feedback.join(interactions,
                                                               feedback.c.completion_id == interactions.c.id))
         .where(interactions.c.requested_model == model, interactions.c.kind == "primary",
                interactions.c.object == "chat.completion",
                *interactions_of(projects), *feedback_of(projects)))
    if since is not None:
        q = q.where(feedback.c.created >= since)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())
