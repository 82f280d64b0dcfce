"""The console's reads of the log: the traffic page (every request, newest first, filtered) and one
interaction in full with the newest feedback of each kind.

Keyset pagination on (created, id), newest first, as the stored-completions list pages: a page reads
``limit + 1`` rows down an index, never a ``COUNT(*)``. The filters, and the index each one walks:
model (``ix_interactions_requested_model``: model, created), project (``ix_interactions_project_created``), status
``error`` (``ix_interactions_errors``, partial: failed requests only, so the writer pays for it on
errors alone), time range (``ix_interactions_created_id``); "rated" and "has a correction" start from
the feedback table's ids. The others (adapter, arm, "not rated", "no correction", text) are checked on
each row as the walk reaches it, so a rare value costs a longer walk. Text search is a case-insensitive
substring of the request's and the reply's JSON text: a scan, cheap within a time range or another
filter, about a second over a million rows on SQLite when it matches little.
A row's rating and correction are the newest of their kind, as in the feedback API's ``summary``.
Only primary rows are listed (not shadow traffic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from gateway.errors import InvalidRequest
from gateway.store.feedback import _newest as feedback_summary
from gateway.store.feedback import _set
from gateway.store.schema import feedback as fb
from gateway.store.schema import interactions as t

# failed requests only (a literal, not a bound parameter, so that the planners match it to the index)
FAILED = t.c.status != sa.literal_column("200")
sa.Index("ix_interactions_errors", t.c.created, t.c.id,
         sqlite_where=sa.text("status <> 200"), postgresql_where=sa.text("status <> 200"))

ROW = (t.c.id, t.c.created, t.c.project, t.c.requested_model, t.c.target, t.c.upstream_model, t.c.arm,
       t.c.attempts, t.c.stream, t.c.status, t.c.prompt_tokens, t.c.completion_tokens, t.c.cached_tokens,
       t.c.cost_usd, t.c.latency_s, t.c.ttft_s, t.c.finish_reason, t.c.object)
RATING = (sa.select(fb.c.rating).where(fb.c.completion_id == t.c.id, fb.c.rating.is_not(None))
          .order_by(fb.c.created.desc(), fb.c.id.desc()).limit(1).scalar_subquery())
CORRECTED = sa.exists().where(fb.c.completion_id == t.c.id, _set(fb.c.correction))
# "has a rating / a correction" starts from the feedback table (far smaller than the log): the ids that have
# one, looked up by key, rather than a walk down the whole log for the few that match
RATED_IDS = t.c.id.in_(sa.select(fb.c.completion_id).where(fb.c.rating.is_not(None)))
CORRECTED_IDS = t.c.id.in_(sa.select(fb.c.completion_id).where(_set(fb.c.correction)))


@dataclass(frozen=True, slots=True)
class TrafficFilter:
    project: str | None = None  # the tenancy filter (None: every project)
    model: str | None = None  # the model name the client sent (the alias)
    adapter: str | None = None  # the upstream model or adapter that answered
    arm: str | None = None  # the canary arm
    status: str | None = None  # "ok", "error", or an HTTP status
    rating: str | None = None  # "up", "down", "rated", "unrated" (the newest rating)
    corrected: bool | None = None  # has a correction (or has none)
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive
    text: str | None = None  # a substring of the request or the reply


def _conditions(f: TrafficFilter) -> list[Any]:
    cond: list[Any] = [t.c.kind == "primary"]
    exact = ((t.c.project, f.project), (t.c.requested_model, f.model), (t.c.upstream_model, f.adapter),
             (t.c.arm, f.arm))
    cond += [column == value for column, value in exact if value is not None]
    if f.status == "ok":
        cond.append(t.c.status == 200)
    elif f.status == "error":
        cond.append(FAILED)
    elif f.status is not None:
        cond.append(t.c.status == int(f.status))
    cond += _feedback_conditions(f)
    if f.since is not None:
        cond.append(t.c.created >= f.since)
    if f.until is not None:
        cond.append(t.c.created < f.until)
    if f.text:
        cond.append(sa.or_(sa.cast(t.c.request, sa.Text).icontains(f.text, autoescape=True),
                           sa.cast(t.c.response, sa.Text).icontains(f.text, autoescape=True)))
    return cond


def _feedback_conditions(f: TrafficFilter) -> list[Any]:
    cond: list[Any] = []
    if f.rating == "up":
        cond += [RATED_IDS, RATING > 0]
    elif f.rating == "down":
        cond += [RATED_IDS, RATING < 0]
    elif f.rating == "rated":
        cond.append(RATED_IDS)
    elif f.rating == "unrated":
        cond.append(RATING.is_(None))
    if f.corrected is not None:
        cond.append(CORRECTED_IDS if f.corrected else ~CORRECTED)
    return cond


def page(engine: sa.Engine, f: TrafficFilter, *, after: str | None = None, limit: int = 50,
         ) -> tuple[list[dict[str, Any]], bool]:
    """One page newest first, starting past the interaction ``after``; returns (rows, has_more)."""
    q = sa.select(*ROW, RATING.label("rating"), CORRECTED.label("corrected")).where(*_conditions(f))
    with engine.connect() as conn:
        if after is not None:
            q = q.where(_older_than(conn, after, f.project))
        rows = conn.execute(q.order_by(t.c.created.desc(), t.c.id.desc()).limit(limit + 1)).mappings().all()
    return [dict(r) for r in rows[:limit]], len(rows) > limit


def _older_than(conn: sa.Connection, after: str, project: str | None) -> Any:
    mine = [t.c.id == after] + ([t.c.project == project] if project is not None else [])
    created = conn.execute(sa.select(t.c.created).where(*mine)).scalar()
    if created is None:
        raise InvalidRequest(f"No interaction with id '{after}' to page from.", param="after")
    return sa.or_(t.c.created < created, sa.and_(t.c.created == created, t.c.id < after))


def interaction(engine: sa.Engine, completion_id: str, project: str | None) -> dict[str, Any] | None:
    """Every column of one interaction, with ``feedback``: the newest of each kind and the count
    (as ``GET /v1/chat/completions/{id}/feedback`` sums it up); None if unknown to ``project``."""
    mine = [t.c.id == completion_id] + ([t.c.project == project] if project is not None else [])
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(*mine)).mappings().first()
        if row is None:
            return None
        return {**row, "feedback": feedback_summary(conn, completion_id)}
