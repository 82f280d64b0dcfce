"""The costs page's closed days, kept: sums and latency percentiles of every day that can no longer change,
so a 90-day view reads a few thousand kept rows instead of grouping a million interactions.

- ``cost_rollup``: per UTC day (days since the epoch), project ('' for none), requested model and kind
  (primary or shadow): requests, errors, tokens and USD; the same GROUP BY as ``costs.cost_report``.
- ``latency_days``: per day and scope (a project, or ``ALL``), p50/p99 of latency and time to first token
  (``costs.latency_by_day`` over that one day).
- ``cost_days``: the days whose rollup is complete (a day with no traffic has a marker and no rows).

A day is kept once it is over by a margin: days before yesterday (``first_open_day``). Today and yesterday
are always read live. A write that reaches a kept day afterwards drops it, in the same transaction, and the
next view fills it again (``invalidate``): the log writer when it inserts a late record (a spool replayed
after an outage: every record of yesterday or older, so a clock a day apart cannot slip between),
retention, and erasure. Fills and drops are serialised (SQLite: the fill holds the write lock from before it
reads; PostgreSQL: a transaction-scoped advisory lock in both), so a fill cannot keep what a concurrent
write changed. Fills go a week at a time, so the log writer never waits long behind one. The gateway keeps
the last 90 days filled in the background (``gateway.store.upkeep``); a view of older days fills them on the
way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from gateway.store.costs import DAY_S, connected, cost_report, latency_by_day
from gateway.store.schema import metadata

ALL = "*"  # the latency scope of every project together
FILL_DAYS = 7  # days per fill transaction
LOCK_KEY = 0x7475_6E65_636F  # pg_advisory_xact_lock's key: fills vs drops of kept days
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd")
LATENCY = ("latency_p50", "latency_p99", "ttft_p50", "ttft_p99")

cost_days = sa.Table(
    "cost_days", metadata,
    sa.Column("day", sa.Integer, primary_key=True),
    sa.Column("filled", sa.Float, nullable=False),
)
cost_rollup = sa.Table(
    "cost_rollup", metadata,
    sa.Column("day", sa.Integer, primary_key=True),
    sa.Column("project", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
)
latency_days = sa.Table(
    "latency_days", metadata,
    sa.Column("day", sa.Integer, primary_key=True),
    sa.Column("scope", sa.String(128), primary_key=True),
    *(sa.Column(name, sa.Float) for name in LATENCY),
    sa.Column("sampled", sa.Integer, nullable=False),
)
KEPT = (cost_rollup, latency_days, cost_days)


def first_open_day(now: float | None = None) -> int:
    """The first day that is read live (yesterday): every day before it can be kept."""
    return int((time.time() if now is None else now) // DAY_S) - 1


def late_days(created: Iterable[float], now: float | None = None) -> set[int]:
    """The days of ``created`` that a kept rollup may cover (yesterday or older)."""
    edge = first_open_day(now) + 1  # a margin of one day against clocks apart
    return {d for d in (int(c // DAY_S) for c in created) if d < edge}


def lock(conn: sa.Connection) -> None:
    """Serialise with fills and drops of kept days (PostgreSQL; SQLite's write lock does it there)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})


def invalidate(conn: sa.Connection, days: Iterable[int] | None = None, *, before: int | None = None) -> None:
    """Drop the kept rows of ``days`` (or of every day before ``before``), inside the caller's write."""
    days = sorted(set(days or ()))
    if not days and before is None:
        return
    lock(conn)
    for table in KEPT:
        conn.execute(table.delete().where(table.c.day.in_(days) if before is None else table.c.day < before))


def invalidate_sql(dialect: str, days: Iterable[int]) -> list[str]:
    """``invalidate`` as plain SQL for the log writer's driver connection (days are integers)."""
    listed = ", ".join(str(int(d)) for d in sorted(set(days)))
    lead = [f"SELECT pg_advisory_xact_lock({LOCK_KEY})"] if dialect == "postgresql" else []
    return lead + [f"DELETE FROM {table.name} WHERE day IN ({listed})" for table in KEPT]


def _write(engine: sa.Engine) -> Any:
    """A write transaction that holds the database's write lock from before its first read."""
    conn = engine.connect()
    if engine.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.begin()
        lock(conn)
    return conn


def fill(engine: sa.Engine, first: int, last: int, now: float | None = None) -> int:
    """Keep the sums of the closed days in ``first..last`` not kept yet; returns how many were filled."""
    def keep(conn: sa.Connection, chunk: list[int]) -> None:
        rows = cost_report(conn, since=chunk[0] * DAY_S, until=(chunk[-1] + 1) * DAY_S,
                           by=("day", "project", "model", "kind"), raw_project=True)
        wanted = set(chunk)
        if rows := [r for r in rows if r["day"] in wanted]:
            conn.execute(cost_rollup.insert(), rows)
        conn.execute(cost_days.insert(), [{"day": d, "filled": time.time()} for d in chunk])

    return _fill(engine, sa.select(cost_days.c.day), first, last, now, keep)


def fill_latency(engine: sa.Engine, first: int, last: int, project: str | None,
                 now: float | None = None) -> int:
    """Keep the latency percentiles of the closed days in ``first..last`` for ``project`` (None: all)."""
    scope = ALL if project is None else project

    def keep(conn: sa.Connection, chunk: list[int]) -> None:
        rows = []
        for day in chunk:
            one = latency_by_day(conn, since=day * DAY_S, until=(day + 1) * DAY_S, project=project).get(day, {})
            rows.append({"day": day, "scope": scope, "sampled": one.get("sampled", 0),
                         **{k: one.get(k) for k in LATENCY}})
        conn.execute(latency_days.insert(), rows)

    return _fill(engine, sa.select(latency_days.c.day).where(latency_days.c.scope == scope), first, last, now, keep)


def _fill(engine: sa.Engine, kept: sa.Select[Any], first: int, last: int, now: float | None,
          keep: Callable[[sa.Connection, list[int]], None]) -> int:
    """The closed days of ``first..last`` that ``kept`` lacks, ``keep``-ed a week a transaction, each under
    the write lock and checked again inside it (a concurrent fill may have kept them meanwhile)."""
    todo = _missing(engine, kept, first, min(last, first_open_day(now) - 1))
    for chunk in _chunks(todo):
        with _write(engine) as conn:
            if chunk := _missing(conn, kept, chunk[0], chunk[-1], among=chunk):
                keep(conn, chunk)
            conn.commit()
    return len(todo)


def _missing(db: sa.Engine | sa.Connection, kept: sa.Select[Any], first: int, last: int,
             among: list[int] | None = None) -> list[int]:
    if last < first:
        return []
    day = kept.selected_columns[0]
    with connected(db) as conn:
        have = set(conn.execute(kept.where(day >= first, day <= last)).scalars())
    return [d for d in (range(first, last + 1) if among is None else among) if d not in have]


def _chunks(days: list[int]) -> list[list[int]]:
    return [days[i:i + FILL_DAYS] for i in range(0, len(days), FILL_DAYS)]


def sums(engine: sa.Engine, first: int, last: int, project: str | None, now: float | None = None,
         ) -> list[dict[str, Any]]:
    """Rows of (day, project, model, kind) and their sums over ``first..last``: kept days from the rollup
    (filled first where missing), the open ones live."""
    fill(engine, first, last, now)
    edge = max(first, first_open_day(now))
    q = sa.select(cost_rollup).where(cost_rollup.c.day >= first, cost_rollup.c.day < edge)
    if project is not None:
        q = q.where(cost_rollup.c.project == project)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
        if edge <= last:
            rows += cost_report(conn, since=edge * DAY_S, until=(last + 1) * DAY_S, project=project,
                                by=("day", "project", "model", "kind"), raw_project=True)
    return rows


def latency(engine: sa.Engine, first: int, last: int, project: str | None, now: float | None = None,
            ) -> dict[int, dict[str, Any]]:
    """``costs.latency_by_day`` over ``first..last``: kept days from ``latency_days``, the open ones live."""
    fill_latency(engine, first, last, project, now)
    edge, scope = max(first, first_open_day(now)), ALL if project is None else project
    q = sa.select(latency_days).where(latency_days.c.scope == scope, latency_days.c.day >= first,
                                      latency_days.c.day < edge, latency_days.c.sampled > 0)
    with engine.connect() as conn:
        out = {r["day"]: {k: r[k] for k in (*LATENCY, "sampled")} for r in conn.execute(q).mappings()}
        if edge <= last:
            out |= latency_by_day(conn, since=edge * DAY_S, until=(last + 1) * DAY_S, project=project)
    return out

