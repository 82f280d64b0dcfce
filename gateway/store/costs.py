"""Cost and token totals from the interaction log, grouped by model, project and UTC day."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from gateway.store.schema import interactions as t

DAY_S = 86_400


def cost_report(engine: sa.Engine, *, since: float | None = None, until: float | None = None,
                project: str | None = None, by: tuple[str, ...] = ("day", "model", "project")
                ) -> list[dict[str, Any]]:
    """One row per group: requests, errors, tokens and USD (shadow calls included, marked)."""
    day = sa.cast(sa.func.floor(t.c.created / DAY_S), sa.Integer).label("day")
    keys = {"day": day, "model": t.c.requested_model.label("model"),
            "project": sa.func.coalesce(t.c.project, "default").label("project"),
            "kind": t.c.kind.label("kind")}
    groups = [keys[k] for k in by]
    q = sa.select(
        *groups,
        sa.func.count().label("requests"),
        sa.func.sum(sa.case((t.c.status != 200, 1), else_=0)).label("errors"),
        sa.func.coalesce(sa.func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
        sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0).label("cost_usd"),
    ).group_by(*groups).order_by(*groups)
    if since is not None:
        q = q.where(t.c.created >= since)
    if until is not None:
        q = q.where(t.c.created < until)
    if project is not None:
        q = q.where(t.c.project == project)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
