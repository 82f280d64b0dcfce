"""The costs page's kept days (gateway.store.cost_days) on SQLite and PostgreSQL: the page reads closed days
from what was kept of them and shows exactly what grouping the log live shows; a late write (the log
writer replaying a spool, retention, erasure) drops the days it touches, and a fill cannot keep what a
concurrent late write changed."""

from __future__ import annotations

import random
import threading
import time
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.console.costs import report
from gateway.log.sink import Sink, to_row
from gateway.store import cost_days, costs
from gateway.store.forget import erase_completion
from gateway.store.interactions import LogStore
from gateway.store.schema import interactions

DAY = 86_400
TODAY = int(time.time() // DAY)


@pytest.fixture(autouse=True)
def _today() -> None:
    """Today as each test starts (a suite may run across midnight UTC)."""
    global TODAY
    TODAY = int(time.time() // DAY)


def _rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` interactions over the last 10 days: projects (one with none), models, kinds, failures."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        created = (TODAY - rng.randrange(10)) * DAY + rng.uniform(0, DAY - 1)
        created = min(created, time.time() - 1)
        failed = rng.random() < 0.1
        out.append({
            "id": f"chatcmpl-{seed:02d}{i:020x}{rng.randrange(16):x}", "created": created,
            "project": rng.choice(["alpha", "beta", None]), "requested_model": rng.choice(["bot", "sales"]),
            "kind": "shadow" if rng.random() < 0.15 else "primary", "status": 502 if failed else 200,
            "object": "chat.completion", "stream": False, "store": False, "attempts": 1,
            "request": {"messages": [{"role": "user", "content": "hi"}], "user": f"u{i % 5}"},
            "response": None if failed else {"choices": [{"message": {"role": "assistant", "content": "ok"}}]},
            "prompt_tokens": rng.randrange(1, 50), "completion_tokens": rng.randrange(1, 50),
            "cost_usd": rng.randrange(1, 1000) / 2**14, "latency_s": rng.uniform(0.05, 2.0),
            "ttft_s": rng.uniform(0.01, 0.5)})
    return out


def _live(engine: Any, project: str | None, first: date, last: date, by_project: bool) -> dict[str, Any]:
    """The same report with nothing kept: every day read from the log."""
    saved = cost_days.first_open_day
    cost_days.first_open_day = lambda now=None: -10**6  # type: ignore[assignment]
    try:
        return report(engine, project, first, last, by_project)
    finally:
        cost_days.first_open_day = saved  # type: ignore[assignment]


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("days", "totals", "models", "by_project"):
        assert _rounded(a[key]) == _rounded(b[key]), key


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _kept(engine: Any) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(cost_days.cost_days.c.day)).scalars())


def test_kept_days_show_what_the_log_shows(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(interactions.insert(), _rows(400))
    first, last = date.fromordinal(date(1970, 1, 1).toordinal() + TODAY - 12), date.today()
    for project, by_project in ((None, True), ("alpha", False), ("beta", False)):
        kept = report(engine, project, first, last, by_project)
        _same(kept, _live(engine, project, first, last, by_project))
        assert sum(d["requests"] for d in kept["days"]) > 0
    assert _kept(engine) == set(range(TODAY - 12, TODAY - 1))  # closed days only: not yesterday, not today
    with engine.connect() as conn:
        scopes = set(conn.execute(sa.select(cost_days.latency_days.c.scope).distinct()).scalars())
    assert scopes == {cost_days.ALL, "alpha", "beta"}

    # Kept means kept: a row slipped into a closed day behind the log's back is not seen...
    sneaked = {**_rows(1, seed=9)[0], "created": (TODAY - 5) * DAY + 10.0, "cost_usd": 1000.0}
    with engine.begin() as conn:
        conn.execute(interactions.insert(), [sneaked])
    assert report(engine, None, first, last, True)["totals"]["cost_usd"] < 1000
    # ...while one on yesterday is (read live).
    with engine.begin() as conn:
        conn.execute(interactions.insert(), [{**sneaked, "id": "chatcmpl-yesterday", "created": (TODAY - 1) * DAY}])
    assert report(engine, None, first, last, True)["totals"]["cost_usd"] > 1000


def test_a_late_write_drops_the_days_it_touches(engine: Any) -> None:
    rows = _rows(300)
    with engine.begin() as conn:
        conn.execute(interactions.insert(), rows)
    first, last = date.today() - timedelta(days=12), date.today()
    report(engine, None, first, last, True)
    assert TODAY - 4 in _kept(engine)

    sink = Sink(engine)  # the log writer replays a spool: records of four days ago
    late = [{**r, "id": r["id"] + "-late", "created": (TODAY - 4) * DAY + 5.0, "cost_usd": 3.0} for r in rows[:3]]
    sink.insert([to_row(r) for r in late])
    sink.insert([to_row(r) for r in late])  # a replay of the same batch: not counted twice
    sink.close()
    assert TODAY - 4 not in _kept(engine) and TODAY - 5 in _kept(engine)
    after = report(engine, None, first, last, True)
    _same(after, _live(engine, None, first, last, True))
    day = next(d for d in after["days"] if d["day"] == (date.today() - timedelta(days=4)).isoformat())
    assert day["cost_usd"] >= 9.0

    doomed = next(r for r in rows if int(r["created"] // DAY) == TODAY - 6 and r["status"] == 200
                  and r["kind"] == "primary")
    erase_completion(engine, doomed["id"], "test")  # erasure
    assert TODAY - 6 not in _kept(engine)
    _same(report(engine, None, first, last, True), _live(engine, None, first, last, True))

    cutoff_day = int((time.time() - 8.5 * DAY) // DAY)
    LogStore(engine).prune(8.5 * DAY)  # retention: every kept day up to the cutoff's goes
    assert not _kept(engine) & set(range(TODAY - 12, cutoff_day + 1)) and cutoff_day + 1 in _kept(engine)
    _same(report(engine, None, first, last, True), _live(engine, None, first, last, True))


def test_a_fill_and_a_late_write_do_not_interleave(engine: Any) -> None:
    """A fill holds the lock from before it reads: the writer's late insert waits, then drops the day."""
    with engine.begin() as conn:
        conn.execute(interactions.insert(), _rows(50))
    filling = cost_days._write(engine)
    done = threading.Event()
    late = {**_rows(1, seed=11)[0], "created": (TODAY - 3) * DAY + 1.0, "cost_usd": 7.0}

    def write() -> None:
        sink = Sink(engine)
        sink.insert([to_row(late)])
        sink.close()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.5)  # behind the fill's lock
    filling.commit()  # the fill ends (it kept nothing here: the marker is what matters)
    filling.close()
    cost_days.fill(engine, TODAY - 3, TODAY - 3)
    thread.join(15)
    assert done.is_set()
    out = report(engine, None, date.today() - timedelta(days=3), date.today() - timedelta(days=3), False)
    assert out["totals"]["cost_usd"] >= 7.0  # kept after the late write, or dropped by it: never stale
    with engine.connect() as conn:
        live = costs.cost_report(conn, since=(TODAY - 3) * DAY, until=(TODAY - 2) * DAY, by=("day",))
    assert out["totals"]["cost_usd"] == pytest.approx(live[0]["cost_usd"])


def test_percentiles_of_a_kept_day_are_that_days(engine: Any) -> None:
    day0 = (TODAY - 3) * DAY
    rows = [{**r, "created": day0 + i, "kind": "primary", "status": 200, "latency_s": (i + 1) / 100,
             "project": "alpha"} for i, r in enumerate(_rows(100))]
    with engine.begin() as conn:
        conn.execute(interactions.insert(), rows)
    first = date.today() - timedelta(days=3)
    kept = report(engine, None, first, first, False)["days"][0]
    assert (kept["latency_p50"], kept["latency_p99"], kept["sampled"]) == (0.5, 0.99, 100)
    assert report(engine, "beta", first, first, False)["days"][0]["sampled"] == 0
    assert cost_days.fill(engine, TODAY - 3, TODAY - 3) == 0  # already kept


def test_upkeep_gathers_statistics_and_keeps_the_last_days(engine: Any) -> None:
    from gateway.store import upkeep

    with engine.begin() as conn:
        conn.execute(interactions.insert(), _rows(60))
    upkeep.analyze(engine)
    upkeep.keep_days(engine, days=5)
    assert _kept(engine) == set(range(TODAY - 6, TODAY - 1))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            indexes = set(conn.exec_driver_sql("SELECT idx FROM sqlite_stat1 WHERE tbl = 'interactions'").scalars())
        assert "ix_interactions_created_id" in indexes
