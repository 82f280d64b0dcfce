"""The console's reads of the log: the traffic page (every request, newest first, filtered) and one
interaction in full with the newest feedback of each kind.

Keyset pagination on (created, id), newest first, as the stored-completions list pages: a page reads
``limit + 1`` rows down an index, never a ``COUNT(*)``. The filters, and the index each one walks:
model (``ix_interactions_requested_model``: model, created), project (``ix_interactions_project_created``), status
``error`` or a failed HTTP status (``ix_interactions_errors``, partial: failed requests only, so the writer pays
for it on errors alone), time range (``ix_interactions_created_id``); "rated" and "has a correction" start from
the feedback table's ids. These are the *walk*: the rows a page steps through.

The others are checked on each row the walk reaches: adapter, arm, "not rated", "no correction", and the
*searches*: text (a case-insensitive substring of the request's or the reply's JSON text) and metadata
(``key=value`` pairs of the request's ``metadata``, all of them). A rare value would cost a walk down the
whole log (text at 1M rows: 4.7 s on SQLite, 13 s on PostgreSQL), so a page with a search or an adapter/arm
filter looks at no more than ``SCAN_ROWS`` rows (per database) of its walk past its cursor: if fewer than a
page match there, the page shows what matched and its ``older`` cursor goes on from the last row looked at
(``searched_to`` says how far back it got), so "Older" searches the next ``SCAN_ROWS``. A time range holding
fewer rows than that is searched whole. No text index: a full-text or trigram index (SQLite FTS5, PostgreSQL
pg_trgm or tsvector GIN) costs the log writer several times its insert time per row
(loadtests/results/console.md).
A row's rating and correction are the newest of their kind, as in the feedback API's ``summary``.
Only primary rows are listed (not shadow traffic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from gateway.errors import InvalidRequest
from gateway.store.feedback import _newest as feedback_summary
from gateway.store.feedback import _set
from gateway.store.schema import feedback as fb
from gateway.store.schema import interactions as t

# The most rows of its walk a page with a search looks at: about half a second on this project's 2-core
# machine (text search costs ~5 µs a row on SQLite, ~25 µs on PostgreSQL: jsonb to text, then ILIKE).
SCAN_ROWS = {"sqlite": 100_000, "postgresql": 20_000}
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
    metadata: tuple[tuple[str, str], ...] = ()  # (key, value) pairs of the request's metadata, all of them

    @property
    def searching(self) -> bool:
        """Whether a rare match could cost a walk down the whole log (so the walk is bounded)."""
        return bool(self.text or self.metadata or self.adapter or self.arm)


class TrafficPage(NamedTuple):
    rows: list[dict[str, Any]]
    older: str | None  # the next page's cursor (None: nothing older matches)
    searched_to: float | None  # set when the search stopped at SCAN_ROWS: the oldest time it looked at


def _walk(f: TrafficFilter) -> list[Any]:
    """The conditions an index serves: they choose the rows a page steps through."""
    cond: list[Any] = []
    if f.project is not None:
        cond.append(t.c.project == f.project)
    if f.model is not None:
        cond.append(t.c.requested_model == f.model)
    if f.status == "error" or (f.status is not None and f.status.isdigit() and int(f.status) != 200):
        cond.append(FAILED)
    if f.since is not None:
        cond.append(t.c.created >= f.since)
    if f.until is not None:
        cond.append(t.c.created < f.until)
    if f.rating in ("up", "down", "rated"):
        cond.append(RATED_IDS)
    if f.corrected:
        cond.append(CORRECTED_IDS)
    return cond


def _checks(f: TrafficFilter) -> list[Any]:
    """The conditions checked on each row the walk reaches."""
    cond: list[Any] = [t.c.kind == "primary"]
    cond += [column == value for column, value in ((t.c.upstream_model, f.adapter), (t.c.arm, f.arm))
             if value is not None]
    if f.status == "ok":
        cond.append(t.c.status == 200)
    elif f.status not in (None, "error"):
        cond.append(t.c.status == int(f.status))
    if f.rating == "up":
        cond.append(RATING > 0)
    elif f.rating == "down":
        cond.append(RATING < 0)
    elif f.rating == "unrated":
        cond.append(RATING.is_(None))
    if f.corrected is False:
        cond.append(~CORRECTED)
    cond += [sa.cast(t.c["metadata"][key].as_string(), sa.Text) == value for key, value in f.metadata]
    if f.text:
        cond.append(sa.or_(sa.cast(t.c.request, sa.Text).icontains(f.text, autoescape=True),
                           sa.cast(t.c.response, sa.Text).icontains(f.text, autoescape=True)))
    return cond


def scan_rows(engine: sa.Engine) -> int:
    return SCAN_ROWS.get(engine.dialect.name, 20_000)


def page(engine: sa.Engine, f: TrafficFilter, *, after: str | None = None, limit: int = 50,
         scan_rows: int | None = None) -> TrafficPage:
    """One page newest first, starting past the interaction ``after``. With a search (``f.searching``), the
    walk stops ``scan_rows`` rows past ``after`` (None: the database's ``SCAN_ROWS``; 0: no bound)."""
    scan_rows = SCAN_ROWS.get(engine.dialect.name, 20_000) if scan_rows is None else scan_rows
    walk = _walk(f)
    with engine.connect() as conn:
        if after is not None:
            walk.append(_older_than(conn, after, f.project))
        floor = None
        if f.searching and scan_rows:
            floor = conn.execute(sa.select(t.c.created, t.c.id).where(*walk).order_by(t.c.created.desc())
                                 .offset(scan_rows - 1).limit(1)).first()
        if floor is not None:  # the walk stops at this row (included): the next page starts past it
            walk.append(_not_older_than(floor.created, floor.id))
        q = sa.select(*ROW, RATING.label("rating"), CORRECTED.label("corrected")).where(*walk, *_checks(f))
        rows = conn.execute(q.order_by(t.c.created.desc(), t.c.id.desc()).limit(limit + 1)).mappings().all()
    found = [dict(r) for r in rows[:limit]]
    if len(rows) > limit:
        return TrafficPage(found, found[-1]["id"], None)
    if floor is not None:
        return TrafficPage(found, floor.id, floor.created)
    return TrafficPage(found, None, None)


def _older_than(conn: sa.Connection, after: str, project: str | None) -> Any:
    mine = [t.c.id == after] + ([t.c.project == project] if project is not None else [])
    created = conn.execute(sa.select(t.c.created).where(*mine)).scalar()
    if created is None:
        raise InvalidRequest(f"No interaction with id '{after}' to page from.", param="after")
    # the bare ``created <=`` lets the planners walk the index from there
    return sa.and_(t.c.created <= created, sa.or_(t.c.created < created, t.c.id < after))


def _not_older_than(created: float, row_id: str) -> Any:
    return sa.and_(t.c.created >= created, sa.or_(t.c.created > created, t.c.id >= row_id))


def interaction(engine: sa.Engine, completion_id: str, project: str | None) -> dict[str, Any] | None:
    """Every column of one interaction, with ``feedback``: the newest of each kind and the count
    (as ``GET /v1/chat/completions/{id}/feedback`` sums it up); None if unknown to ``project``."""
    mine = [t.c.id == completion_id] + ([t.c.project == project] if project is not None else [])
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(*mine)).mappings().first()
        if row is None:
            return None
        return {**row, "feedback": feedback_summary(conn, completion_id)}
