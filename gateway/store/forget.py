"""Forgetting people's data: one completion, or every interaction of one end user.

    erase_completion(engine, "chatcmpl-...", actor, project)     # DELETE /v1/chat/completions/{id}
    forget_user(engine, "customer-42", actor, project=None)      # tuneloop forget --user, POST /v1/admin/forget

Both delete, in one transaction, the interactions (with their shadow copies), all their
feedback and the stored responses (``POST /v1/responses``) served as them; every dataset built
from them (``dataset_records``, the lineage) gets ``stale`` set, so it is rebuilt before it
trains again (its file still holds the lines: delete or rebuild it); and the erasure goes to the
audit trail with its counts. A user is named by the requests' ``user`` field; the audit trail
keeps only a SHA-256 of it, so the record of a forget does not keep the person.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import sqlalchemy as sa

from gateway.store import cost_days
from gateway.store.audit import record
from gateway.store.costs import DAY_S
from gateway.store.datasets import dataset_records
from gateway.store.responses import responses
from gateway.store.schema import datasets, feedback, interactions

t = interactions


def erase_completion(engine: sa.Engine, completion_id: str, actor: str,
                     project: str | None = None) -> dict[str, Any] | None:
    """None when there is no such completion (in ``project``, when given)."""
    q = sa.select(t.c.id).where(t.c.id == completion_id)
    if project is not None:
        q = q.where(t.c.project == project)
    with engine.begin() as conn:
        if conn.execute(q).first() is None:
            return None
        out = _erase(conn, q, "completion.delete")
        record(conn, actor, "completion.delete", completion_id, out)
    return out


def forget_user(engine: sa.Engine, user: str, actor: str, project: str | None = None) -> dict[str, Any]:
    """Every interaction whose request names ``user`` (in ``project``, when given)."""
    q = sa.select(t.c.id).where(t.c.request["user"].as_string() == user)
    if project is not None:
        q = q.where(t.c.project == project)
    subject = "sha256:" + hashlib.sha256(user.encode()).hexdigest()
    with engine.begin() as conn:
        out = _erase(conn, q, "user.forget")
        record(conn, actor, "user.forget", subject, {**out, "project": project})
    return out


def _erase(conn: sa.Connection, chosen: sa.Select[Any], reason: str) -> dict[str, Any]:
    """Erase the interactions ``chosen`` selects (their ids) and their shadow copies: subqueries, never
    lists of ids, so a user with any number of interactions is one statement per table."""
    ids = sa.select(t.c.id).where(sa.or_(t.c.id.in_(chosen), t.c.parent_id.in_(chosen)))
    stale = sorted(set(conn.execute(sa.select(dataset_records.c.dataset_id)
                                    .where(dataset_records.c.interaction_id.in_(ids))).scalars()))
    fb = conn.execute(feedback.delete().where(feedback.c.completion_id.in_(ids))).rowcount
    kept = conn.execute(responses.delete().where(responses.c.completion_id.in_(ids))).rowcount
    day = sa.cast(sa.func.floor(t.c.created / DAY_S), sa.Integer)
    cost_days.invalidate(conn, conn.execute(sa.select(day).where(t.c.id.in_(ids)).distinct()).scalars())
    n = conn.execute(t.delete().where(t.c.id.in_(ids))).rowcount  # last: ``ids`` selects from it
    if stale:
        conn.execute(datasets.update().where(datasets.c.id.in_(stale), datasets.c.stale.is_(None))
                     .values(stale={"reason": reason, "at": time.time()}))  # stale since the first erasure
    return {"completions": n, "feedback": fb, "responses": kept, "datasets_stale": stale}
