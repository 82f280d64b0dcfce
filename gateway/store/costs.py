"""Cost and token totals from the interaction log, grouped by model, project and UTC day."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from gateway.store.schema import interactions as t

DAY_S = 86_400


@contextmanager
def connected(db: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    """``db`` itself when it is a connection (inside the caller's transaction), else a new one."""
    if isinstance(db, sa.Connection):
        yield db
    else:
        with db.connect() as conn:
            yield conn


def cost_report(db: sa.Engine | sa.Connection, *, since: float | None = None, until: float | None = None,
                project: str | None = None, by: tuple[str, ...] = ("day", "model", "project"),
                raw_project: bool = False) -> list[dict[str, Any]]:
    """One row per group: requests, errors, tokens and USD (shadow calls included, marked). ``project``
    groups a request with none as "default" (as shown), or as "" with ``raw_project``."""
    day = sa.cast(sa.func.floor(t.c.created / DAY_S), sa.Integer).label("day")
    keys = {"day": day, "model": t.c.requested_model.label("model"),
            "project": sa.func.coalesce(t.c.project, "" if raw_project else "default").label("project"),
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
    with connected(db) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


SAMPLE_CAP = 20_000  # at most about this many latencies are read for the percentiles of a range


def latency_by_day(db: sa.Engine | sa.Connection, *, since: float, until: float, project: str | None = None,
                   ) -> dict[int, dict[str, float | None]]:
    """p50 and p99 of latency and time to first token per UTC day (``day``: days since the epoch), over
    primary requests answered with 200. SQLite has no percentile function, so they are computed here, in
    Python (nearest rank), over a bounded sample: every such request when the range holds at most
    ``SAMPLE_CAP``, else those whose id ends below a bound (ids end in random hex digits), about
    ``SAMPLE_CAP`` of them spread over the whole range; one query either way, down the created index."""
    cond = [t.c.kind == "primary", t.c.status == 200, t.c.created >= since, t.c.created < until]
    if project is not None:
        cond.append(t.c.project == project)
    day = sa.cast(sa.func.floor(t.c.created / DAY_S), sa.Integer)
    with connected(db) as conn:
        total = conn.execute(sa.select(sa.func.count()).where(*cond)).scalar_one()
        rows = conn.execute(sa.select(day, t.c.latency_s, t.c.ttft_s).where(*cond, *_sample(total))).all()
    by_day: dict[int, tuple[list[float], list[float]]] = {}
    for d, latency, ttft in rows:
        latencies, ttfts = by_day.setdefault(int(d), ([], []))
        if latency is not None:
            latencies.append(latency)
        if ttft is not None:
            ttfts.append(ttft)
    return {d: {"latency_p50": percentile(lat, 0.5), "latency_p99": percentile(lat, 0.99),
                "ttft_p50": percentile(tt, 0.5), "ttft_p99": percentile(tt, 0.99), "sampled": len(lat)}
            for d, (lat, tt) in by_day.items()}


def _sample(total: int) -> list[Any]:
    """The id condition that keeps about ``SAMPLE_CAP`` of ``total`` rows (none when all fit)."""
    if total <= SAMPLE_CAP:
        return []
    share, digits = SAMPLE_CAP / total, 1
    while 16**digits * share < 16 and digits < 6:
        digits += 1
    bound = format(math.ceil(16**digits * share), f"0{digits}x")
    return [sa.func.substr(t.c.id, sa.func.length(t.c.id) - digits + 1, digits) < bound]


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile ``p`` (0..1) of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]
