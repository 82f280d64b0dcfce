"""Fairness benchmark: another tenant's latency while one tenant holds hundreds of streams.

One run, loopback only, bounded in time; the real engine (``python -m adapters.engine``, SmolLM2-135M,
max batch 32), started twice: ``--scheduling-policy fair`` (round-robin across tenants, the default) and
``fcfs`` (one FIFO, the engine before this change).  For each:

1. **idle**: tenant ``b`` alone sends ``--probes`` requests one after another: the baseline;
2. **loaded**: tenant ``a`` opens ``--streams`` streams at once (``x-tuneloop-tenant: a``); for
   ``--window`` seconds tenant ``b`` sends one request every ``--interval`` seconds; ``--grace`` seconds
   later everything left is cancelled (so the run is bounded whatever the machine's speed; a ``b``
   request still waiting counts with the time it waited, a lower bound).

Every request is a stream of exactly ``--tokens`` tokens (``ignore_eos``, greedy).  Reported: ``b``'s
time to first token and end-to-end latency, p50 and p95, loaded over idle; and how many of ``a``'s
streams finished meanwhile (fair queueing must not cost throughput).

    .venv/bin/python loadtests/fairness_bench.py [--streams 500] [--tokens 8] [--out loadtests/results/fairness.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gateway.sse import SSEParser  # noqa: E402

MSG = [{"role": "user", "content": "Name three colors."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[tuple[float, bool]], q: float) -> tuple[float, bool]:
    """The q-th percentile of ``(seconds, censored)`` values: a censored one is a lower bound."""
    if not xs:
        return float("nan"), False
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def one(client: httpx.AsyncClient, url: str, tenant: str, tokens: int, rec: dict[str, float]) -> None:
    """Stream one request, writing ``start``, ``first`` (first token) and ``end`` into ``rec``."""
    body = {"messages": MSG, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    rec["start"] = time.perf_counter()
    parser = SSEParser()
    async with client.stream("POST", url + "/v1/chat/completions", json=body,
                             headers={"x-tuneloop-tenant": tenant}) as r:
        r.raise_for_status()
        async for piece in r.aiter_bytes():
            for data in parser.feed(piece):
                if "first" not in rec:
                    ch = orjson.loads(data)
                    if ch["choices"] and ch["choices"][0]["delta"].get("content"):
                        rec["first"] = time.perf_counter()
    rec["end"] = time.perf_counter()


def latencies(recs: list[dict[str, float]], until: float) -> tuple[list, list]:
    """TTFT and end-to-end per request; unfinished ones count as censored (``until - start``, a lower bound)."""
    ttft = [(r["first"] - r["start"], False) if "first" in r else (until - r["start"], True) for r in recs]
    e2e = [(r["end"] - r["start"], False) if "end" in r else (until - r["start"], True) for r in recs]
    return ttft, e2e


async def phase(url: str, args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=args.streams + 64, max_keepalive_connections=args.streams + 64)
    async with httpx.AsyncClient(timeout=args.window * 4, limits=limits) as client:
        for _ in range(2):  # warm-up
            await one(client, url, "b", args.tokens, {})
        idle: list[dict[str, float]] = []
        for _ in range(args.probes):
            idle.append({})
            await one(client, url, "b", args.tokens, idle[-1])
        a = [{} for _ in range(args.streams)]
        t0 = time.perf_counter()
        busy = [asyncio.ensure_future(one(client, url, "a", args.tokens, rec)) for rec in a]
        await asyncio.sleep(1.0)  # a's streams are in
        b: list[dict[str, float]] = []
        tasks = []
        while time.perf_counter() - t0 < args.window and not all(t.done() for t in busy):
            b.append({})
            tasks.append(asyncio.ensure_future(one(client, url, "b", args.tokens, b[-1])))
            await asyncio.sleep(args.interval)
        await asyncio.wait(tasks, timeout=args.grace)
        until = time.perf_counter()
        for t in busy + tasks:  # whatever is left is cancelled: the engine aborts it
            t.cancel()
        await asyncio.gather(*busy, *tasks, return_exceptions=True)
    return {"idle": latencies(idle, until), "loaded": latencies(b, until), "a_done": sum("end" in r for r in a),
            "a_wall": max((r["end"] for r in a if "end" in r), default=until) - t0}


def start_engine(policy: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {"TUNELOOP_MODEL_CACHE": str(REPO / ".tuneloop" / "model-cache"), **os.environ, "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "adapters.engine", "--port", str(port), "--threads", str(threads),
                             "--scheduling-policy", policy], cwd=REPO, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited; see {log}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"engine did not start; see {log}")


def row(policy: str, res: dict) -> dict:
    (it, ie), (lt, le) = res["idle"], res["loaded"]
    return {"policy": policy, "idle_ttft": pct(it, 50)[0], "idle_e2e": pct(ie, 50)[0], "ttft_p50": pct(lt, 50),
            "ttft_p95": pct(lt, 95), "e2e_p50": pct(le, 50), "e2e_p95": pct(le, 95), "probes": len(le),
            "finished": sum(not c for _, c in le), "a_done": res["a_done"], "a_wall": res["a_wall"]}


def fmt(v: tuple[float, bool]) -> str:
    return f"{'≥ ' if v[1] else ''}{v[0]:.2f} s"


def report(rows: list[dict], args: argparse.Namespace, load: float) -> str:
    lines = [
        "# Fairness: another tenant's latency while one tenant holds many streams",
        "",
        f"`loadtests/fairness_bench.py` (one run, loopback, bounded): the engine (SmolLM2-135M-Instruct, max batch "
        f"32, {args.threads} torch thread, CPU fp32), tenant `a` opening **{args.streams} streams at once**, then "
        f"tenant `b` sending one request every {args.interval:g} s for {args.window:g} s; every request streams "
        f"exactly {args.tokens} tokens (greedy, `ignore_eos`). After the window `b`'s last requests get "
        f"{args.grace:g} s more, then everything left is cancelled (the engine aborts it); a `b` request still "
        "unfinished then counts with the time it had waited, a lower bound (marked ≥). Baseline: `b`'s same "
        "request on the idle engine, just before, in the same run. `fair`: round-robin across tenants "
        "(`x-tuneloop-tenant`), and at most max_batch // 2 running rows per tenant while another waits (the "
        "default); `fcfs`: one FIFO (the engine before).",
        "",
        f"Machine: {os.cpu_count()} cores, shared with other jobs (load average {load:.1f} at the start), so "
        "absolute figures are noisy: compare within the run.",
        "",
        "| policy | b idle TTFT | b idle e2e | b TTFT p50 | b TTFT p95 | b e2e p50 | b e2e p95 | e2e p50 / idle | "
        "b finished | a's streams done (time) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{'≥ ' if r['e2e_p50'][1] else ''}{r['e2e_p50'][0] / r['idle_e2e']:.1f}x"
        lines.append(f"| {r['policy']} | {r['idle_ttft']:.2f} s | {r['idle_e2e']:.2f} s | {fmt(r['ttft_p50'])} | "
                     f"{fmt(r['ttft_p95'])} | {fmt(r['e2e_p50'])} | {fmt(r['e2e_p95'])} | {ratio} | "
                     f"{r['finished']}/{r['probes']} | {r['a_done']}/{args.streams} ({r['a_wall']:.0f} s) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--probes", type=int, default=5, help="b's requests on the idle engine")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between b's requests under load")
    ap.add_argument("--window", type=float, default=60.0, help="seconds b sends requests, per policy")
    ap.add_argument("--grace", type=float, default=15.0, help="seconds more for b's last requests")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--policies", default="fair,fcfs")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    load = os.getloadavg()[0]
    logdir = Path(os.environ.get("TMPDIR", "/tmp"))
    for policy in args.policies.split(","):
        proc, url = start_engine(policy, args.threads, logdir / f"fairness-engine-{policy}.log")
        try:
            res = asyncio.run(phase(url, args))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        rows.append(row(policy, res))
        print(rows[-1], flush=True)
    text = report(rows, args, load)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
