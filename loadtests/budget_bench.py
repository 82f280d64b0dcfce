"""Budget overshoot: how far C concurrent clients of one key get past its limit.

One run, loopback only, bounded: the gateways get 90 s to start (seconds on an idle machine), then
measuring stops after ``--deadline`` (90 s; a full run takes about 40 s of it).
Against an upstream whose every reply uses its whole ``max_tokens``
(``tests/security/usage_upstream.py``, 200 ms per reply), C clients of one fresh key send
requests back to back for up to ``--duration`` seconds, each stopping at its first 429.
Spent = what the 200s report (tokens, USD from ``x-tuneloop-cost-usd``, requests); the figure
is spent / limit, for tpm=100 (max_tokens 10), usd_per_day=0.05 (max_tokens 2, $1,000/$3,000
per 1M tokens) and rpm=5, at C = 20 and 50.

Systems, started side by side: ``after`` is this tree (reserve at admission, settle after);
``before`` is the tree at ``--before`` (default: the commit before reserve-then-settle;
counters settled after the call), extracted with ``git archive`` and run with the same venv.
Each with in-process limits, Redis (``redis_url``; Redis must listen on 127.0.0.1:6379) and
``--workers 2`` without Redis.

    .venv/bin/python loadtests/budget_bench.py [--duration 3] [--out loadtests/results/budget.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import loadgen  # noqa: E402

from tests.security.usage_upstream import UsageUpstream  # noqa: E402

BEFORE = "8212676"  # the last commit that settled budgets after the call
REDIS = "redis://127.0.0.1:6379/0"
PRICES = {"input": 1000.0, "output": 3000.0}
MSG = [{"role": "user", "content": "hello world"}]
LIMITS = [("tpm", 100, 10), ("usd_per_day", 0.05, 2), ("rpm", 5, 10)]  # (limit, value, max_tokens)
BACKENDS = ["memory", "redis", "2 workers"]
NOTES = """
Spent = what the 200s reported (tokens, `x-tuneloop-cost-usd`, requests) inside one rate-limit
minute; the limit is the key's. *before* settles after the call: every request admitted while
the counters are still below the limit spends in full, so the overshoot grows with concurrency
(the issue measured 14.8× on a $0.05 daily budget and 7.4× on tpm 100 at concurrency 20, with
dearer replies), and `--workers 2` without Redis keeps one counter per worker (rpm 2×).
*after* reserves the worst case at admission (prompt estimate + max_tokens × n, priced at the
dearest route) and settles the actual use when the request ends: the spend stays at or under
the limit at any concurrency; what is left under it is the estimate's margin (a reservation
that no longer fits is refused). The workers share one SQLite file of counters.
"""


class System:
    def __init__(self, version: str, backend: str, tree: Path, upstream: UsageUpstream, tmp: Path) -> None:
        self.version, self.backend = version, backend
        self.home = tmp / f"{version}-{backend.replace(' ', '-')}"
        self.home.mkdir()
        config = {"targets": {"up": {"kind": "vllm", "base_urls": [upstream.base_url], "prices": PRICES,
                                     "timeout_s": 30}},
                  "models": {"bench": {"routes": [{"target": "up", "model": "usage-200"}]}}}
        if backend == "redis":
            config["redis_url"] = REDIS
        self.config = self.home / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.port = loadgen.free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.env = {"TUNELOOP_HOME": str(self.home), "TUNELOOP_AUTH": "required", "PYTHONPATH": str(tree),
                    "HF_HUB_OFFLINE": "1"}
        self.tree = tree
        workers = ["--workers", "2"] if backend == "2 workers" else []
        self.proc = loadgen.start([sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config),
                                   "--port", str(self.port), *workers], env=self.env,
                                  log_path=str(self.home / "gateway.log"), cwd=str(tree))
        self.admin = ""

    def ready(self) -> None:
        loadgen.wait_ready(f"http://127.0.0.1:{self.port}/health/live", self.proc, timeout=90)
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--project", "ops", "--admin",
                              "--config", str(self.config)], env={**os.environ, **self.env}, cwd=str(self.tree),
                             capture_output=True, text=True, check=True, timeout=60)
        self.admin = out.stdout.strip().splitlines()[-1]

    def key(self, limits: dict[str, float]) -> str:
        resp = httpx.post(f"{self.url}/admin/keys", headers={"authorization": f"Bearer {self.admin}"},
                          json={"project": f"bench-{uuid.uuid4().hex[:8]}", "limits": limits}, timeout=30)
        resp.raise_for_status()
        return resp.json()["key"]


async def hammer(url: str, key: str, clients: int, max_tokens: int, duration: float) -> dict[str, float]:
    """``clients`` loops of back-to-back requests, each stopping at its first 429 or at the deadline."""
    spent = {"tokens": 0.0, "usd_per_day": 0.0, "rpm": 0.0, "refused": 0.0, "errors": 0.0}
    body = {"model": "bench", "messages": MSG, "max_tokens": max_tokens}
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers={"authorization": f"Bearer {key}"}) as http:
        async def client() -> None:
            while time.monotonic() < deadline:
                resp = await http.post(f"{url}/chat/completions", json=body)
                if resp.status_code == 429:
                    spent["refused"] += 1
                    return
                if resp.status_code != 200:
                    spent["errors"] += 1
                    return
                spent["tokens"] += resp.json()["usage"]["total_tokens"]
                spent["usd_per_day"] += float(resp.headers.get("x-tuneloop-cost-usd", 0))
                spent["rpm"] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    spent["tpm"] = spent["tokens"]
    return spent


def measure(system: System, limit: str, value: float, max_tokens: int, clients: int, duration: float) -> dict:
    while True:  # inside one rate-limit minute: again with a fresh key if it rolled over
        start = time.time()
        spent = asyncio.run(hammer(system.url, system.key({limit: value}), clients, max_tokens, duration))
        if int(start // 60) == int(time.time() // 60) or limit == "usd_per_day":
            return {"ratio": spent[limit] / value, **spent}


def extract(rev: str, tmp: Path) -> Path:
    tree = tmp / f"tree-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "gateway", "adapters"], check=True,
                             capture_output=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True, timeout=60)
    return tree


def table(rows: list[dict], args: argparse.Namespace, elapsed: float) -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    head = (f"Run {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · commit {commit}"
            f" vs before = {args.before} · upstream 200 ms per reply, every reply uses its whole max_tokens · "
            f"clients stop at their first 429 or after {args.duration} s · {elapsed:.0f} s in all\n\n")
    lines = ["| limits in | limit | clients | before: spent / limit | after: spent / limit | after: 200s "
             "| after: 429s |", "|---|---|---:|---:|---:|---:|---:|"]

    def ratio(m: dict | None) -> str:
        return f"{m['ratio']:.2f}×" if m else "—"

    for r in rows:
        a = r.get("after")
        lines.append(f"| {r['backend']} | {r['limit']} = {r['value']} | {r['clients']} | {ratio(r.get('before'))} | "
                     f"{ratio(a)} | {int(a['rpm']) if a else '—'} | {int(a['refused']) if a else '—'} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds each client may keep sending")
    ap.add_argument("--clients", default="20,50")
    ap.add_argument("--before", default=BEFORE, help="git revision of the settle-after baseline ('' = skip)")
    ap.add_argument("--deadline", type=float, default=90.0, help="measure for at most this many seconds")
    ap.add_argument("--out", default=str(ROOT / "loadtests/results/budget.md"))
    args = ap.parse_args()
    started = time.monotonic()
    upstream = UsageUpstream(loadgen.free_port()).start()
    systems: list[System] = []
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            trees = {"after": ROOT, **({"before": extract(args.before, tmp)} if args.before else {})}
            systems = [System(v, b, tree, upstream, tmp) for v, tree in trees.items() for b in BACKENDS]
            for s in systems:
                s.ready()
            measuring = time.monotonic()
            cells = [(b, lim, c) for b in BACKENDS for lim in LIMITS for c in map(int, args.clients.split(","))]
            for backend, (limit, value, max_tokens), clients in cells:
                if time.monotonic() - measuring > args.deadline:
                    print("deadline reached: the remaining cells are skipped", file=sys.stderr)
                    break
                row = {"backend": backend, "limit": limit, "value": value, "clients": clients}
                for s in systems:
                    if s.backend == backend:
                        row[s.version] = measure(s, limit, value, max_tokens, clients, args.duration)
                print(row, file=sys.stderr)
                rows.append(row)
        finally:
            for s in systems:
                loadgen.stop(s.proc, timeout=15)
            upstream.stop()
    text = table(rows, args, time.monotonic() - started)
    print(text)
    Path(args.out).write_text("# Budget overshoot\n\n" + text + NOTES)


if __name__ == "__main__":
    main()
