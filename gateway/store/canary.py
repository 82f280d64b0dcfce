"""What canary analysis and shadow comparison read from the log.

    arm_stats(engine, "support-bot", since)   # per upstream model: requests, errors, latency, ratings
    shadow_pairs(engine, "support-bot", since) # primaries with their shadow's reply

Evaluation traffic (``metadata.tuneloop == "eval"``) is left out: it is not user traffic.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from gateway.store.owners import feedback_of, interactions_of
from gateway.store.schema import feedback
from gateway.store.schema import interactions as t


def _not_eval() -> sa.ColumnElement[bool]:
    tag = t.c.metadata["tuneloop"].as_string()
    return sa.or_(t.c.metadata.is_(None), tag.is_(None), tag != "eval")


def _newest_rating(projects: list[str] | None = None) -> Any:
    return (sa.select(feedback.c.rating)
            .where(feedback.c.completion_id == t.c.id, feedback.c.rating.is_not(None), *feedback_of(projects))
            .order_by(feedback.c.created.desc(), feedback.c.id.desc())
            .limit(1).correlate(t).scalar_subquery())


def arm_stats(engine: sa.Engine, model: str, since: float, until: float | None = None,
              projects: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per arm (the upstream model a request reached): n, errors, error_rate, latency p50/mean, rating mean;
    ``projects``: only their traffic and feedback (gateway.store.owners). Requests the client abandoned
    (499) say nothing about the arm and are left out."""
    rating = _newest_rating(projects).label("rating")
    q = (sa.select(t.c.upstream_model, t.c.status, t.c.latency_s, rating)
         .where(t.c.requested_model == model, t.c.kind == "primary", t.c.created >= since, _not_eval(),
                t.c.status != 499, *interactions_of(projects)))
    if until is not None:
        q = q.where(t.c.created < until)
    arms: dict[str, dict[str, list[Any]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(q):
            arm = arms.setdefault(row.upstream_model or "?", {"status": [], "lat": [], "rating": []})
            arm["status"].append(row.status)
            if row.status == 200 and row.latency_s is not None:
                arm["lat"].append(row.latency_s)
            if row.rating is not None:
                arm["rating"].append(row.rating)
    return {name: _summary(v) for name, v in arms.items()}


def _summary(v: dict[str, list[Any]]) -> dict[str, Any]:
    n = len(v["status"])
    errors = sum(1 for s in v["status"] if s != 200)
    lat = sorted(v["lat"])
    return {"requests": n, "errors": errors, "error_rate": errors / n if n else 0.0,
            "latency_p50": lat[len(lat) // 2] if lat else None,
            "latency_mean": sum(lat) / len(lat) if lat else None,
            "ratings": len(v["rating"]),
            "rating_mean": sum(v["rating"]) / len(v["rating"]) if v["rating"] else None}


def shadow_pairs(engine: sa.Engine, model: str, since: float, limit: int = 5000,
                 projects: list[str] | None = None) -> list[dict[str, Any]]:
    """Primary records of ``model`` since ``since`` that have a shadow, with both replies and ratings."""
    s = t.alias("s")
    rating = _newest_rating(projects).label("rating")
    q = (sa.select(t.c.id, t.c.request, t.c.response, t.c.status, t.c.upstream_model, rating,
                   s.c.id.label("shadow_id"), s.c.response.label("shadow_response"),
                   s.c.status.label("shadow_status"), s.c.upstream_model.label("shadow_model"))
         .join(s, sa.and_(s.c.parent_id == t.c.id, s.c.kind == "shadow"))
         .where(t.c.requested_model == model, t.c.kind == "primary", t.c.created >= since,
                *interactions_of(projects))
         .order_by(t.c.created).limit(limit))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]
