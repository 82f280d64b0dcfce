"""The console's review queue (``/ui/review``): the replies a person should look at, one at a time.

Three reasons put a reply (a primary interaction answered with 200) in the queue:

- ``low``: its newest rating is below zero and it has no correction, and no reviewer has judged it in the
  queue yet (the queue's own writes carry ``metadata.review``); any age. Starts from the feedback table's
  ratings below zero.
- ``sampled``: a deterministic sample of recent replies with no feedback at all: those whose id ends in
  ``SAMPLE_SUFFIXES`` (ids end in random hex digits, so ``"0"`` is one in 16), within ``window_s``.
- ``shadow``: within ``window_s``, a shadow call (``kind="shadow"``, ``parent_id``) answered with 200 and
  its first choice's text differs from the primary's (exactly: whitespace counts; tool calls, whose
  content is null, do not), and the primary has no feedback. Starts from the window's shadow rows, each
  joined to its primary by key.

Any feedback ends ``sampled`` and ``shadow``; a rating above zero, a correction or a queue review ends
``low``. So a reviewed reply leaves the queue. The queue is newest first, with a keyset cursor (``after``:
the id of the last reply seen or skipped), so skipping moves on and saving stays in place.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from gateway.store.schema import feedback as fb
from gateway.store.schema import interactions as t
from gateway.store.traffic import CORRECTED, RATING

REASONS = {"low": "rated down, not corrected", "sampled": "sampled, not rated", "shadow": "shadow disagrees"}
SAMPLE_SUFFIXES = ("0",)
WINDOW_S = 14 * 86_400.0
COUNT_CAP = 1000  # the counts stop here: no scan of the whole log for a number
REVIEW_KEY = "review"  # feedback.metadata key the queue's writes carry (approve, reject, edit)

shadow = t.alias("shadow")
TEXT = ("choices", 0, "message", "content")
REVIEWED = sa.exists().where(fb.c.completion_id == t.c.id, fb.c["metadata"][REVIEW_KEY].as_string().is_not(None))
ANY_FEEDBACK = sa.exists().where(fb.c.completion_id == t.c.id)
SAMPLED = sa.func.substr(t.c.id, sa.func.length(t.c.id), 1).in_(SAMPLE_SUFFIXES)
# "low" starts from the replies that ever had a rating below zero (a small part of the feedback table)
EVER_LOW = t.c.id.in_(sa.select(fb.c.completion_id).where(fb.c.rating < 0))
# "shadow" starts from the window's shadow rows, each joined to its primary by key
WITH_SHADOW = t.join(shadow, shadow.c.parent_id == t.c.id)
DISAGREES = [shadow.c.parent_id.is_not(None), shadow.c.kind == "shadow", shadow.c.status == 200,
             shadow.c.response[TEXT].as_string().is_distinct_from(t.c.response[TEXT].as_string())]


def _query(reason: str, project: str | None, since: float) -> sa.Select[Any]:
    """The queue's replies for ``reason`` as (created, id)."""
    cond: list[Any] = [t.c.kind == "primary", t.c.status == 200, t.c.response.is_not(None)]
    if project is not None:
        cond.append(t.c.project == project)
    q = sa.select(t.c.created, t.c.id)
    if reason == "low":
        return q.where(*cond, EVER_LOW, RATING < 0, ~CORRECTED, ~REVIEWED)
    if reason == "sampled":
        return q.where(*cond, t.c.created >= since, SAMPLED, ~ANY_FEEDBACK)
    # A shadow call starts after its primary: ``shadow.created >= since`` only lets it walk the created index
    return (q.select_from(WITH_SHADOW).where(*cond, t.c.created >= since, shadow.c.created >= since, *DISAGREES,
                                              ~ANY_FEEDBACK))


def _since(window_s: float) -> float:
    return time.time() - window_s


def _cursor(conn: sa.Connection, after: str | None, project: str | None) -> Any:
    if after is None:
        return sa.true()
    mine = [t.c.id == after] + ([t.c.project == project] if project is not None else [])
    created = conn.execute(sa.select(t.c.created).where(*mine)).scalar()
    if created is None:
        return sa.true()  # an unknown cursor starts from the top
    return sa.or_(t.c.created < created, sa.and_(t.c.created == created, t.c.id < after))


def next_item(engine: sa.Engine, project: str | None, *, reasons: tuple[str, ...] = tuple(REASONS),
              after: str | None = None, window_s: float = WINDOW_S) -> tuple[str, str] | None:
    """The newest reply in the queue past ``after``: (id, reason), or None when the queue is done."""
    since, found = _since(window_s), []
    with engine.connect() as conn:
        older = _cursor(conn, after, project)
        for reason in reasons:
            row = conn.execute(_query(reason, project, since).where(older)
                               .order_by(t.c.created.desc(), t.c.id.desc()).limit(1)).first()
            if row is not None:
                found.append((row.created, row.id, reason))
    if not found:
        return None
    _, completion_id, reason = max(found)
    return completion_id, reason


def counts(engine: sa.Engine, project: str | None, *, window_s: float = WINDOW_S) -> dict[str, int]:
    """How many replies wait for each reason (up to ``COUNT_CAP``: more shows as the cap)."""
    since, out = _since(window_s), {}
    with engine.connect() as conn:
        for reason in REASONS:
            ids = _query(reason, project, since).limit(COUNT_CAP).subquery()
            # distinct: a reply with two disagreeing shadow calls is one reply
            out[reason] = conn.execute(sa.select(sa.func.count(sa.distinct(ids.c.id)))).scalar_one()
    return out


def shadows(engine: sa.Engine, completion_id: str) -> list[dict[str, Any]]:
    """The shadow calls of one primary interaction (target, model, status, reply)."""
    q = (sa.select(t.c.id, t.c.target, t.c.upstream_model, t.c.status, t.c.response, t.c.latency_s)
         .where(t.c.parent_id == completion_id, t.c.kind == "shadow").order_by(t.c.created, t.c.id))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]
