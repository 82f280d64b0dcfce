"""The gateway's upkeep of the database, in the background: planner statistics (SQLite) and the costs page's
kept days. First after ``TUNELOOP_UPKEEP_DELAY_S`` (60) seconds, then every ``TUNELOOP_UPKEEP_INTERVAL_S``
(3600); a failure is logged and tried again next time.

- ``analyze``: SQLite plans from statistics only once ``ANALYZE`` has gathered them; without them it takes any
  equality on an indexed column as selective (a project holding a quarter of the log walked by its index for
  the review queue's counts: 0.47 s at a million rows, 0.09 s with statistics). ``analysis_limit`` bounds the
  rows read per index (~0.1 s at a million rows). PostgreSQL's autovacuum gathers its own.
- the last ``KEEP_DAYS`` closed days of the costs page (``gateway.store.cost_days``): sums, and latency over
  every project, so the first view after a day ends does not fill them.
"""

from __future__ import annotations

import asyncio
import logging
import os

import sqlalchemy as sa

from gateway.store import cost_days

log = logging.getLogger("tuneloop.upkeep")
KEEP_DAYS = 90


def analyze(engine: sa.Engine) -> None:
    """Refresh the planner's statistics (SQLite; PostgreSQL's autovacuum does its own)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def keep_days(engine: sa.Engine, days: int = KEEP_DAYS) -> None:
    last = cost_days.first_open_day() - 1
    cost_days.fill(engine, last - days + 1, last)
    cost_days.fill_latency(engine, last - days + 1, last, None)


async def run_upkeep(engine: sa.Engine) -> None:
    """Forever, in the gateway (a task of its lifespan)."""
    await asyncio.sleep(float(os.environ.get("TUNELOOP_UPKEEP_DELAY_S", "60")))
    interval = float(os.environ.get("TUNELOOP_UPKEEP_INTERVAL_S", "3600"))
    while True:
        for step in (analyze, keep_days):
            try:
                await asyncio.to_thread(step, engine)
            except Exception as exc:  # the database may be away: try again next time
                log.warning("database upkeep (%s) failed: %s", step.__name__, exc)
        await asyncio.sleep(interval)
