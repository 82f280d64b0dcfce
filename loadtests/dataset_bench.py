"""Dataset build benchmark: a log of N interactions → SFT file, on SQLite and PostgreSQL.

    .venv/bin/python loadtests/dataset_bench.py              # N = 1,000,000, both backends
    .venv/bin/python loadtests/dataset_bench.py --n 100000   # quick run
    .venv/bin/python loadtests/dataset_bench.py --backends sqlite

Fill: realistic records (system + user prompt, reply, usage, metadata; ~2% failures,
~10% rated, ~2% corrected, some PII) generated with a fixed seed and bulk-inserted
(sqlite3 executemany / PostgreSQL COPY) straight into the migrated schema. The SQLite
file is cached as /tmp/tuneloop-dsbench-<N>.db and the PostgreSQL database
``tuneloop_dsbench_<N>`` is kept, so reruns skip the fill.
Build: ``adapters.datasets.build.build`` (the code behind ``tuneloop dataset build``)
in a child process, so its peak RSS (``ru_maxrss``) is the build's alone; the encode
workers it starts (``--workers``, default 0: none) are its children, and their peak
(``RUSAGE_CHILDREN``, the largest worker) is reported beside it. Prints and writes
records/s, wall time, peak memory and the machine's load average to
loadtests/results/datasets.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ("order parcel refund invoice delivery account password shipping tracking late "
         "broken replace warranty address payment card subscription cancel upgrade plan "
         "support agent please thanks hello help urgent today tomorrow week number status "
         "update email phone store return label box damaged missing item price discount").split()
PII = ("my email is jane.doe{}@example.com", "call me at +1 415 555 01{:02d}",
       "card 4111 1111 1111 1111", "token sk-proj-abcdefghijklmnop{:04d}")
PG_ADMIN = "host=127.0.0.1 port=5432 user={user} dbname=test connect_timeout=3"
COLS = ("id", "created", "project", "requested_model", "target", "upstream_model", "attempts",
        "stream", "store", "request", "response", "finish_reason", "prompt_tokens",
        "completion_tokens", "total_tokens", "latency_s", "status", "metadata", "kind")


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n)).capitalize() + "."


def gen_rows(n: int, seed: int = 7):
    """(interaction row tuple, feedback row tuple | None) with JSON as text."""
    rng = random.Random(seed)
    t0 = 1_735_689_600.0
    for i in range(n):
        cid = f"chatcmpl-{i:012d}"
        user = " ".join(sentence(rng, rng.randint(8, 30)) for _ in range(rng.randint(1, 3)))
        if i % 50 == 0:
            user += " " + rng.choice(PII).format(i % 100)
        reply = " ".join(sentence(rng, rng.randint(10, 40)) for _ in range(rng.randint(1, 4)))
        status = 500 if i % 50 == 7 else 200
        req = {"model": "support-bot", "messages": [
            {"role": "system", "content": "You are a helpful support agent for Acme."},
            {"role": "user", "content": user}], "metadata": {"team": f"t{i % 4}"}}
        resp = None if status != 200 else {
            "id": cid, "object": "chat.completion", "created": int(t0 + i), "model": "support-bot",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply,
                                                 "refusal": None}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100}}
        row = (cid, t0 + i * 0.5, "acme", "support-bot", "local", "support-v3", 1, False, False,
               json.dumps(req), json.dumps(resp) if resp else None,
               "stop" if resp else None, 40, 60, 100, 0.4, status,
               json.dumps({"team": f"t{i % 4}"}), "primary")
        fb = None
        if i % 10 == 3:
            corr = json.dumps({"role": "assistant", "content": sentence(rng, 20)}) \
                if i % 50 == 3 else "null"
            fb = (f"fb-{i:012d}", cid, t0 + i * 0.5 + 30, "acme", rng.choice((-1.0, 0.0, 1.0)),
                  corr)
        yield row, fb


def fill_sqlite(path: Path, n: int) -> None:
    import sqlite3

    from gateway.store import db

    tmp = path.with_suffix(".filling")
    tmp.unlink(missing_ok=True)
    engine = db.create_engine(f"sqlite:///{tmp}")
    db.upgrade(engine)
    engine.dispose()
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    ins = f"INSERT INTO interactions ({','.join(COLS)}) VALUES ({','.join('?' * len(COLS))})"
    fins = ("INSERT INTO feedback (id, completion_id, created, project, rating, correction) "
            "VALUES (?,?,?,?,?,?)")
    rows, fbs = [], []
    for row, fb in gen_rows(n):
        rows.append(row)
        if fb:
            fbs.append(fb)
        if len(rows) >= 20000:
            con.executemany(ins, rows)
            con.executemany(fins, fbs)
            rows, fbs = [], []
    con.executemany(ins, rows)
    con.executemany(fins, fbs)
    con.commit()
    con.close()
    tmp.rename(path)


def pg_user() -> str:
    import psycopg

    for user in ("postgres", "root"):
        try:
            psycopg.connect(PG_ADMIN.format(user=user)).close()
            return user
        except psycopg.Error:
            continue
    raise SystemExit("PostgreSQL not reachable on 127.0.0.1:5432")


def fill_postgres(n: int) -> str:
    import psycopg

    from gateway.store import db

    user, name = pg_user(), f"tuneloop_dsbench_{n}"
    url = f"postgresql://{user}@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN.format(user=user), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    engine = db.create_engine(url)
    db.upgrade(engine)
    engine.dispose()
    with psycopg.connect(url.replace("postgresql://", "postgresql://", 1)) as conn:
        have = conn.execute("SELECT count(*) FROM interactions").fetchone()[0]
        if have == n:
            return url
        conn.execute("TRUNCATE interactions, feedback, datasets, dataset_records")
        # One COPY at a time per connection (two open at once wait on each other forever):
        # the feedback rows (~10%) wait in a list for the second COPY.
        fbs = []
        with conn.cursor() as cur:
            with cur.copy(f"COPY interactions ({','.join(COLS)}) FROM STDIN") as cp:
                for row, fb in gen_rows(n):
                    cp.write_row(row)
                    if fb:
                        fbs.append(fb)
            with cur.copy("COPY feedback (id, completion_id, created, project, rating, "
                          "correction) FROM STDIN") as fcp:
                for fb in fbs:
                    fcp.write_row(fb)
        conn.execute("ANALYZE interactions")
        conn.execute("ANALYZE feedback")
    return url


def child_build(url: str, out: str, workers: int) -> None:
    from adapters.datasets.build import BuildOptions, build
    from gateway.store import db

    engine = db.create_engine(url)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rep = build(engine, BuildOptions(fmt="sft", out=Path(out), progress=False, workers=workers))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "read": rep["read"], "written": rep["written"],
                      "dropped": rep["dropped"], "scrubbed": rep["scrubbed"], "peak_rss_mb": rss,
                      "worker_rss_mb": wrss, "workers": workers, "sha256": rep["sha256"],
                      "load": [round(load0, 1), round(os.getloadavg()[0], 1)]}))


def run_build(url: str, out: Path, timeout: float, workers: int = 1) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", url, str(out), str(workers)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--timeout", type=float, default=600, help="per build, seconds")
    ap.add_argument("--workers", type=int, default=0, help="encode worker processes")
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.child:
        child_build(args.child[0], args.child[1], int(args.child[2]))
        return
    results = []
    for backend in args.backends.split(","):
        t0 = time.perf_counter()
        if backend == "sqlite":
            path = Path(f"/tmp/tuneloop-dsbench-{args.n}.db")
            if not path.exists():
                fill_sqlite(path, args.n)
            url = f"sqlite:///{path}"
        else:
            url = fill_postgres(args.n)
        fill_s = time.perf_counter() - t0
        r = run_build(url, Path(f"/tmp/tuneloop-dsbench-{backend}-{args.n}.jsonl"), args.timeout,
                      args.workers)
        r.update(backend=backend, n=args.n, fill_or_reuse_s=round(fill_s, 1),
                 rec_per_s=round(r["read"] / r["wall_s"]))
        print(json.dumps(r))
        results.append(r)
    if not args.no_write:
        write_results(results)


def write_results(results: list[dict]) -> None:
    out = REPO / "loadtests" / "results" / "datasets.md"
    lines = out.read_text().splitlines() if out.exists() else [
        "# Dataset build benchmark (loadtests/dataset_bench.py)", "",
        "Goal: 1,000,000 interactions → SFT file in ≤ 60 s, peak RSS < 500 MB.", "",
        "| date | backend | N | workers | read | train+val | wall s | rec/s "
        "| peak RSS MB (builder + worker) | scrubbed | load avg (start/end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    # new rows go right under the table's last row (prose may follow the table)
    at = max((i + 1 for i, ln in enumerate(lines) if ln.startswith("|")), default=len(lines))
    for r in results:
        lines.insert(at, f"| {time.strftime('%Y-%m-%d %H:%M')} | {r['backend']} | {r['n']:,} | "
                     f"{r['workers']} | {r['read']:,} | "
                     f"{r['written']['train'] + r['written']['val']:,} | "
                     f"{r['wall_s']:.1f} | {r['rec_per_s']:,} | "
                     f"{r['peak_rss_mb']:.0f} + {r['worker_rss_mb']:.0f} | "
                     f"{sum(r['scrubbed'].values()):,} | {r['load'][0]} / {r['load'][1]} |")
        at += 1
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TUNELOOP_HOME", "/tmp/tuneloop-dsbench-home")
    main()
