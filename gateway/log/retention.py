"""Retention: ``tuneloop log prune --older-than 30d`` (``gateway/log/cli.py``) calls ``prune``."""

from __future__ import annotations

from gateway.store import db
from gateway.store.interactions import LogStore


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
