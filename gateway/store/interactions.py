"""Reads and updates of the log: stored completions, feedback, retention.

Methods are synchronous (SQLAlchemy Core); routers run them with ``asyncio.to_thread``.
What the stored-completions API shows: every *primary* chat completion record with HTTP
status 200 and a response; feedback takes any such record, legacy text completions too.
Which requests get logged at all (the per-model log policy: all | only ``store: true`` |
none) is decided by the gateway before ``submit``.
Every query takes ``project`` (None = no tenancy filter).
"""

from __future__ import annotations

import builtins  # inside LogStore, ``list`` is its method
import time
from typing import Any

import sqlalchemy as sa

from gateway.errors import InvalidRequest
from gateway.store import cost_days
from gateway.store.costs import DAY_S
from gateway.store.messages import stored_messages
from gateway.store.responses import responses
from gateway.store.schema import feedback, interactions

t = interactions
_VISIBLE = sa.and_(t.c.kind == "primary", t.c.status == 200, t.c.response.is_not(None))
_STORED = sa.and_(_VISIBLE, t.c.object == "chat.completion")  # the stored chat completions API's


def _scope(completion_id: str, project: str | None, shown: Any = _STORED) -> Any:
    cond = sa.and_(t.c.id == completion_id, shown)
    return cond if project is None else sa.and_(cond, t.c.project == project)


def _exists(conn: sa.Connection, completion_id: str, project: str | None) -> bool:
    """A completion that can take feedback (of either API)."""
    return conn.execute(sa.select(t.c.id).where(_scope(completion_id, project, _VISIBLE))).first() is not None


def stored_completion(row: Any) -> dict[str, Any]:
    """The record's response as returned, with its current metadata merged in."""
    out = dict(row.response or {})
    out["id"] = row.id
    out.setdefault("object", "chat.completion")
    out["metadata"] = row.metadata or {}
    return out


class LogStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # ---- stored completions ----
    def get(self, completion_id: str, project: str | None = None) -> dict[str, Any] | None:
        q = sa.select(t.c.id, t.c.response, t.c["metadata"]).where(_scope(completion_id, project))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else stored_completion(row)

    def list(self, *, model: str | None = None, metadata: dict[str, str] | None = None,
             after: str | None = None, limit: int = 20, order: str = "asc",
             project: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """One page, keyset-paginated on (created, id); returns (items, has_more)."""
        q = sa.select(t.c.id, t.c.response, t.c["metadata"]).where(_STORED)
        if project is not None:
            q = q.where(t.c.project == project)
        if model is not None:
            q = q.where(t.c.requested_model == model)  # the name the client sent
        for key, value in (metadata or {}).items():
            q = q.where(t.c["metadata"][key].as_string() == value)
        desc = order == "desc"
        with self.engine.connect() as conn:
            if after is not None:
                q = q.where(self._after(conn, after, desc, project))
            keys = (t.c.created.desc(), t.c.id.desc()) if desc else (t.c.created, t.c.id)
            rows = conn.execute(q.order_by(*keys).limit(limit + 1)).all()
        return [stored_completion(r) for r in rows[:limit]], len(rows) > limit

    def _after(self, conn: sa.Connection, after: str, desc: bool, project: str | None) -> Any:
        created = conn.execute(sa.select(t.c.created).where(_scope(after, project))).scalar()
        if created is None:
            raise InvalidRequest(f"No stored chat completion with id `{after}`.", param="after")
        if desc:
            return sa.or_(t.c.created < created, sa.and_(t.c.created == created, t.c.id < after))
        return sa.or_(t.c.created > created, sa.and_(t.c.created == created, t.c.id > after))

    def update_metadata(self, completion_id: str, metadata: dict[str, str] | None,
                        project: str | None = None) -> dict[str, Any] | None:
        with self.engine.begin() as conn:
            n = conn.execute(
                t.update().where(_scope(completion_id, project)).values(metadata=metadata)
            ).rowcount
        return self.get(completion_id, project) if n else None

    def messages(self, completion_id: str, *, after: str | None = None, limit: int = 20,
                 order: str = "asc", project: str | None = None,
                 ) -> tuple[builtins.list[dict[str, Any]], bool] | None:
        q = sa.select(t.c.request).where(_scope(completion_id, project))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return None
        return stored_messages(completion_id, row.request or {}, after=after, limit=limit,
                               order=order)

    # ---- feedback ----
    def add_feedback(self, fb: dict[str, Any], project: str | None = None,
                     ) -> dict[str, Any] | None:
        """Insert one feedback row (already validated); None if the completion is unknown."""
        with self.engine.begin() as conn:
            if not _exists(conn, fb["completion_id"], project):
                return None
            conn.execute(feedback.insert().values(**fb, project=project))
        return fb

    def list_feedback(self, completion_id: str, project: str | None = None,
                      ) -> builtins.list[dict[str, Any]] | None:
        """All feedback on a completion, newest first; None if the completion is unknown."""
        with self.engine.connect() as conn:
            if not _exists(conn, completion_id, project):
                return None
            rows = conn.execute(
                sa.select(feedback).where(feedback.c.completion_id == completion_id)
                .order_by(feedback.c.created.desc(), feedback.c.id.desc())
            ).mappings().all()
        return [dict(r) for r in rows]

    # ---- retention and helpers ----
    def prune(self, older_than_s: float, project: str | None = None, exclude: tuple[str, ...] = ()) -> int:
        """Delete interactions (with their feedback and the stored Responses made of them) older than
        ``older_than_s`` seconds (of one project only, when given; of none of ``exclude``)."""
        cutoff = time.time() - older_than_s
        cond = t.c.created < cutoff
        if project is not None:
            cond = sa.and_(cond, t.c.project == project)
        if exclude:
            cond = sa.and_(cond, sa.or_(t.c.project.is_(None), t.c.project.not_in(exclude)))
        with self.engine.begin() as conn:
            doomed = sa.select(t.c.id).where(cond)
            conn.execute(feedback.delete().where(feedback.c.completion_id.in_(doomed)))
            conn.execute(responses.delete().where(responses.c.completion_id.in_(doomed)))
            n = conn.execute(t.delete().where(cond)).rowcount
            if n:
                cost_days.invalidate(conn, before=int(cutoff // DAY_S) + 1)
            return n

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()

    def ids(self) -> builtins.list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(t.c.id)).scalars())

    def record(self, completion_id: str) -> dict[str, Any] | None:
        """The full row (every column), for datasets, tests and debugging."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == completion_id)).mappings().first()
        return None if row is None else dict(row)
