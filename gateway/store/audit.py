"""The audit trail: who did what to keys, routes, adapters and people's data, and when.

    record(conn, actor, "key.create", key_id, {"project": ...})   # inside the change's own transaction
    AuditStore(engine).list(limit=50, action="user.forget")

Actions: ``key.create``, ``key.revoke``, ``key.rotate``, ``completion.delete``, ``user.forget``,
``model.delete``, ``adapter.promote``, ``adapter.canary``, ``adapter.rollback``, ``retention.prune``.
``actor`` is the API key id of the caller (``admin`` with auth off), ``cli:<os user>`` for the command
line, or ``retention`` for the gateway's own pruning.  Listed by ``tuneloop audit``.
"""

from __future__ import annotations

import getpass
import time
from typing import Any

import sqlalchemy as sa

from gateway.store.schema import JSONType, metadata

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256)),
    sa.Column("detail", JSONType),
    sa.Index("ix_audit_log_created", "created"),
)


def cli_actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def actor_of(principal: Any) -> str:
    """An API caller as the audit trail names it: its key id, or ``admin`` (auth off, loopback)."""
    key_id = getattr(principal, "key_id", None)
    return str(key_id) if key_id else "admin"


def record(conn: sa.Connection, actor: str, action: str, target: str | None,
           detail: dict[str, Any] | None = None) -> None:
    conn.execute(audit_log.insert().values(created=time.time(), actor=actor, action=action, target=target,
                                           detail=detail))


class AuditStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(self, actor: str, action: str, target: str | None, detail: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            record(conn, actor, action, target, detail)

    def list(self, limit: int = 50, action: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if action:
            q = q.where(audit_log.c.action == action)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]
