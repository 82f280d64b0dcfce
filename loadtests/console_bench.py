"""The console's pages on a big log: the traffic page (each filter, first page and a deep keyset page), one
interaction, the review queue and the costs page, on SQLite and PostgreSQL, at 1,000,000 interactions.

    .venv/bin/python loadtests/console_bench.py                     # 1,000,000 rows, both databases
    .venv/bin/python loadtests/console_bench.py --rows 100000 --runs 3 --backends sqlite

Fill: loadtests/console_fill.py (a fresh SQLite file and a fresh PostgreSQL database on 127.0.0.1:5432, both
dropped at the end unless ``--keep``; a kept pair is reused by the next run with ``--reuse``). Timings: the
functions the pages call, in-process (``traffic.page`` with the filter the page builds from its query string,
``traffic.interaction``, ``review.counts`` + ``review.next_item``, ``costs.report``), p50 and max of
``--runs`` runs each (the costs page's first view, which keeps the closed days, once); planner statistics are
gathered after the fill (``analyze``); then real HTTP GETs of ``/ui/`` pages against a ``tuneloop serve`` on
loopback pointed at the same database with auth off (rendering, session and sync included). The deep page
starts from the interaction in the middle of the log. Writes loadtests/results/console.md, prints the table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.console import costs as costs_page  # noqa: E402
from gateway.console import views  # noqa: E402
from gateway.store import cost_days, db, review, traffic, upkeep  # noqa: E402
from gateway.store.schema import interactions as t  # noqa: E402
from loadtests import console_fill, text_index_cost  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
RESULTS = ROOT / "loadtests/results/console.md"
KEPT_SQLITE = Path(tempfile.gettempdir()) / "tuneloop-console-bench-{rows}.db"
KEPT_PG = "tuneloop_console_bench_{rows}"
GOAL_S = 1.0


def filters(rows: int, now: float) -> list[tuple[str, dict[str, str], str | None]]:
    """(label, the page's query string, the viewer's project) for each traffic filter."""
    day = datetime.fromtimestamp(now - 30 * 86_400, UTC).replace(microsecond=0)
    rare_order = f"ORD-{rows // 10:07d}"  # one row, 90% of the log deep
    return [
        ("none", {}, None),
        ("model (sales-bot, 20%)", {"model": "sales-bot"}, None),
        ("project (globex, 25%; a project key's view)", {}, "globex"),
        ("adapter (support-v4, canary, ~4%)", {"adapter": "support-v4"}, None),
        ("adapter (support-v1, retired: oldest 2% only)", {"adapter": "support-v1"}, None),
        ("status = error (4%)", {"status": "error"}, None),
        ("rating = down (~1.6%)", {"rating": "down"}, None),
        ("has a correction (~1%)", {"corrected": "yes"}, None),
        ("time range (one day, 30 days ago)", {"since": day.isoformat(),
                                               "until": (day + timedelta(days=1)).isoformat()}, None),
        ("metadata team=t3 (1 in 8)", {"meta": "team=t3"}, None),
        ("metadata session=… (4 rows)", {"meta": f"session=s-{rows // 40:06d}"}, None),
        (f"text '{console_fill.COMMON}' (~10%)", {"q": console_fill.COMMON}, None),
        ("text, 1 row (an order number)", {"q": rare_order}, None),
    ]


def timed(fn: Any, runs: int) -> tuple[float, float, Any]:
    spent, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        spent.append(time.perf_counter() - t0)
    spent.sort()
    return spent[len(spent) // 2], spent[-1], out


def middle(engine: sa.Engine, project: str | None = None) -> str:
    """The id of the interaction in the middle of the log (of ``project``): the deep page's cursor."""
    q = sa.select(t.c.created).order_by(t.c.created)
    q = q.where(t.c.project == project) if project else q
    with engine.connect() as conn:
        lo, hi = conn.execute(sa.select(sa.func.min(t.c.created), sa.func.max(t.c.created))).one()
        below = sa.select(t.c.id).where(t.c.created <= (lo + hi) / 2).order_by(t.c.created.desc()).limit(1)
        return conn.execute(below.where(t.c.project == project) if project else below).scalar_one()


def supported(query: dict[str, str]) -> bool:
    return all(k in views.FILTERS for k in query)


def measure(engine: sa.Engine, rows: int, now: float, runs: int) -> dict[str, tuple[float, float, str]]:
    out: dict[str, tuple[float, float, str]] = {}
    cursors = {None: middle(engine), "globex": middle(engine, "globex")}
    for label, query, project in filters(rows, now):
        for deep in (False, True):
            name = f"traffic, {'deep page' if deep else 'first page'}: {label}"
            if not supported(query):
                out[name] = (float("nan"), float("nan"), "no such filter")
                continue
            f = views.traffic_filter(query, project)
            p50, worst, got = timed(lambda f=f, deep=deep, project=project: traffic.page(
                engine, f, after=cursors[project] if deep else None, limit=50), runs)
            out[name] = (p50, worst, f"{len(got[0])} rows")
            sys.stderr.write(f"  {name}: {p50 * 1000:.0f} ms\n")
    some = cursors[None]
    out["interaction page"] = (*timed(lambda: views.conversation(traffic.interaction(engine, some, None)["request"]),
                                      runs)[:2], "")
    for project in (None, "globex"):
        who = "" if project is None else f", {project}'s key"
        out[f"review queue (counts + next){who}"] = (*timed(lambda project=project: queue(engine, project),
                                                            runs)[:2], "")
    today = datetime.now(UTC).date()
    with engine.begin() as conn:  # the first view of 90 days, nothing kept yet: it fills the closed days
        for kept in cost_days.KEPT:
            conn.execute(kept.delete())
    first = timed(lambda: costs_page.report(engine, None, today - timedelta(days=89), today, True), 1)
    out["costs page, 90 days, first view (keeps 88 closed days)"] = (*first[:2], "")
    for days in (14, 90):
        out[f"costs page, {days} days"] = (*timed(lambda days=days: costs_page.report(
            engine, None, today - timedelta(days=days - 1), today, True), runs)[:2], "")
    return out


def queue(engine: sa.Engine, project: str | None) -> Any:
    """What the review page reads: the counts, then the next reply among the reasons with one waiting."""
    counts = review.counts(engine, project)
    return review.next_item(engine, project, reasons=tuple(r for r in review.REASONS if counts[r]))


def analyze(engine: sa.Engine) -> None:
    """Planner statistics after the bulk fill: the gateway's upkeep on SQLite (within a minute of start, then
    hourly); on PostgreSQL what autovacuum does after a load this size."""
    if engine.dialect.name == "sqlite":
        upkeep.analyze(engine)
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, engine: sa.Engine, rows: int, runs: int) -> dict[str, tuple[float, float, str]]:
    """GETs against ``tuneloop serve`` on loopback (auth off), pointed at ``url``."""
    some = middle(engine)
    paths = {"GET /ui/": "/ui/", "GET /ui/?after=(middle)": f"/ui/?after={some}",
             "GET /ui/?q=(1 row)": f"/ui/?q=ORD-{rows // 10:07d}",
             "GET /ui/?meta=session=(4 rows)": f"/ui/?meta=session%3Ds-{rows // 40:06d}",
             "GET /ui/completions/{id}": f"/ui/completions/{some}", "GET /ui/review": "/ui/review",
             "GET /ui/costs?days=14": "/ui/costs?days=14", "GET /ui/costs?days=90": "/ui/costs?days=90"}
    out: dict[str, tuple[float, float, str]] = {}
    with tempfile.TemporaryDirectory() as home:
        dead = free_port()
        config = {"targets": {"local": {"kind": "vllm", "base_urls": [f"http://127.0.0.1:{dead}/v1"]}},
                  "models": {m: {"routes": [{"target": "local", "model": m}]} for m, _ in console_fill.MODELS}}
        (Path(home) / "config.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        env = {**os.environ, "TUNELOOP_HOME": home, "TUNELOOP_DATABASE_URL": url, "TUNELOOP_AUTH": "off"}
        with open(Path(home) / "gateway.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--config",
                                     str(Path(home) / "config.yaml")], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                deadline = time.time() + 90
                while True:
                    try:
                        if client.get("/health/live").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError((Path(home) / "gateway.log").read_text()[-2000:])
                    time.sleep(0.2)
                for name, path in paths.items():
                    if "meta=" in path and not supported({"meta": ""}):
                        out[name] = (float("nan"), float("nan"), "no such filter")
                        continue
                    codes: set[int] = set()
                    p50, worst, _ = timed(lambda path=path, codes=codes: codes.add(client.get(path).status_code),
                                          runs)
                    out[name] = (p50, worst, "HTTP " + ",".join(map(str, sorted(codes))))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


def run_backend(backend: str, rows: int, runs: int, keep: bool, reuse: bool) -> dict[str, Any]:
    now = time.time()
    sqlite_path = KEPT_SQLITE.with_name(KEPT_SQLITE.name.format(rows=rows))
    pg_name = KEPT_PG.format(rows=rows) if (keep or reuse) else f"tuneloop_console_bench_{secrets.token_hex(4)}"
    url = f"sqlite:///{sqlite_path}" if backend == "sqlite" else f"postgresql://postgres@127.0.0.1:5432/{pg_name}"
    fresh = not (reuse and (sqlite_path.exists() if backend == "sqlite" else _pg_exists(pg_name)))
    if fresh:
        if backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
        else:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{pg_name}"')
    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
        fill_s = 0.0
        if fresh:
            sys.stderr.write(f"{backend}: filling {rows:,} interactions\n")
            spent = console_fill.fill(rows, now, str(sqlite_path) if backend == "sqlite" else None,
                                      url if backend == "postgres" else None)
            fill_s = spent["generate"] + spent[backend]
        with engine.connect() as conn:
            now = conn.execute(sa.select(sa.func.max(t.c.created))).scalar_one() + 60
        analyze(engine)
        sys.stderr.write(f"{backend}: timing the pages\n")
        results = measure(engine, rows, now, runs)
        results.update(http(url, engine, rows, runs))
        return {"results": results, "fill_s": fill_s}
    finally:
        engine.dispose()
        if not keep:
            if backend == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
            else:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def _pg_exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def cell(value: tuple[float, float, str] | None) -> str:
    if value is None:
        return "—"
    p50, worst, note = value
    if p50 != p50:  # nan: not measured
        return note
    flag = "" if worst < GOAL_S else " ✗"
    return f"{p50 * 1000:,.0f} / {worst * 1000:,.0f}{flag}" + (f" ({note})" if note else "")


def table(by_backend: dict[str, dict[str, Any]]) -> str:
    names = list(next(iter(by_backend.values()))["results"])
    heads = {"sqlite": "SQLite p50 / max ms", "postgres": "PostgreSQL p50 / max ms"}
    lines = ["| what | " + " | ".join(heads[b] for b in by_backend) + " |",
             "|---|" + "---:|" * len(by_backend)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(r["results"].get(name)) for r in by_backend.values()) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--keep", action="store_true", help="keep the filled databases for a --reuse run")
    parser.add_argument("--reuse", action="store_true", help="reuse databases kept by --keep (skip the fill)")
    parser.add_argument("--index-cost", type=int, default=20_000,
                        help="records for the text-index cost table (loadtests/text_index_cost.py; 0: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    t0 = time.perf_counter()
    by_backend = {b: run_backend(b, args.rows, args.runs, args.keep, args.reuse) for b in args.backends.split(",")}
    out = table(by_backend)
    sys.stdout.write(out + "\n")
    cost = ""
    if args.index_cost:
        sys.stderr.write("what a text index would cost the writer\n")
        cost = text_index_cost.table(args.index_cost, tuple(args.backends.split(",")))
        sys.stdout.write(cost + "\n")
    fills = ", ".join(f"{b} {r['fill_s']:.0f} s" for b, r in by_backend.items() if r["fill_s"])
    worst = max(v[1] for r in by_backend.values() for v in r["results"].values() if v[1] == v[1])
    args.out.write_text(
        "# The console on a big log\n\n"
        f"`loadtests/console_bench.py --rows {args.rows} --runs {args.runs}`, {date.today().isoformat()}, "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end (a shared machine), "
        f"whole run {time.perf_counter() - t0:.0f} s (fill: {fills or 'reused'}). "
        f"Goal: every page under {GOAL_S:.0f} s (✗ marks a max over it); worst here {worst * 1000:,.0f} ms. "
        "In-process rows: the function the page calls; HTTP rows: a `tuneloop serve` on loopback (auth off), "
        "the whole page. Deep page: keyset cursor at the middle of the log.\n\n" + out + "\n"
        + (f"\n## What a text index would cost the log writer\n\n{cost}\n" if cost else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
