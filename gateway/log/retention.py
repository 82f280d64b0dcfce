"""Retention: ``tuneloop log prune --older-than 30d`` (``gateway/log/cli.py``) calls ``prune``; the gateway
prunes on its own by the config's ``retention_days`` (``run_retention``, every hour).

    retention_days: 90                      # every project
    retention_days: {"*": 90, acme: 30}     # acme keeps 30 days, the others 90; leave "*" out to keep theirs

Each pass deletes the interactions older than their project's days (with their feedback and shadow
copies' feedback) and records the counts in the audit trail (``retention.prune``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from gateway.store import db
from gateway.store.audit import AuditStore
from gateway.store.interactions import LogStore

log = logging.getLogger("tuneloop.retention")
DAY_S = 86400.0


def prune(database_url: str, older_than_s: float, project: str | None = None) -> int:
    """Delete interactions older than ``older_than_s`` seconds (and their feedback).

    Returns how many interactions were deleted. Migrates first, so it works on a
    fresh database too.
    """
    engine = db.create_engine(database_url)
    try:
        db.upgrade(engine)
        return LogStore(engine).prune(older_than_s, project)
    finally:
        engine.dispose()


def apply_retention(engine: Any, days: dict[str, float]) -> dict[str, int]:
    """One pass: ``{project or "*": interactions deleted}``."""
    store, out = LogStore(engine), {}
    named = tuple(p for p in days if p != "*")
    for project in named:
        out[project] = store.prune(days[project] * DAY_S, project)
    if "*" in days:
        out["*"] = store.prune(days["*"] * DAY_S, exclude=named)
    if any(out.values()):
        AuditStore(engine).add("retention", "retention.prune", None, {"deleted": out, "days": days})
    return out


async def run_retention(engine: Any, days: dict[str, float]) -> None:
    """Forever: a pass now, then every ``TUNELOOP_RETENTION_INTERVAL_S`` (3600) seconds; failures are logged."""
    interval = float(os.environ.get("TUNELOOP_RETENTION_INTERVAL_S", "3600"))
    while True:
        try:
            deleted = await asyncio.to_thread(apply_retention, engine, days)
            if any(deleted.values()):
                log.info("retention deleted %s interactions", deleted)
        except Exception as exc:  # the database may be away: try again next time
            log.warning("retention pass failed: %s", exc)
        await asyncio.sleep(interval)
