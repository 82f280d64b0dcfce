"""Added latency of POST /v1/responses against POST /v1/chat/completions, one gateway, one run.

One ``tuneloop serve`` in front of the fast mock upstream (loadtests/mock_upstream.py), default
log policy (every interaction logged, SQLite in a temporary TUNELOOP_HOME). Paths measured, each
in every round, interleaved:
  direct              straight to the mock (the baseline for "added")
  chat                /v1/chat/completions
  responses           /v1/responses with ``store: false`` (translation both ways, no stored row)
  responses+store     /v1/responses as clients send it (``store`` true by default: a stored row)
Modes: non-stream c1 and c16 (latency p50/p99), stream c1 and c16 (time to the first SSE event: chat's
first chunk, the Response's ``response.created``). Load: the asyncio client of loadgen.py (the
gateway's own HTTP/1.1 pool), each cell bounded by ``--duration`` and a request count. Added
latency and the ratio to chat are taken within each round, then the median over rounds.
Goal: responses' added p50 at most 1.2x chat's.

CPU placement (2 cores): the gateway alone on CPU 1; the mock and the load generator on CPU 0.
Every process it starts (the gateway with its log writer, the mock) is killed on exit or error.

    .venv/bin/python loadtests/responses_bench.py [--duration 3] [--rounds 3] [--out loadtests/results/responses.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Say hello in one word."
PATHS = ["direct", "chat", "responses", "responses+store"]
MODES = [("non-stream c1", 1, False), ("non-stream c16", 16, False), ("stream c1 (TTFT)", 1, True),
         ("stream c16 (TTFT)", 16, True)]
GOAL = 1.2


def request(path: str, stream: bool) -> tuple[str, bytes]:
    """(URL path, body) of one request on ``path``."""
    if path in ("direct", "chat"):
        body: dict = {"model": "mock-model" if path == "direct" else "bench-model",
                      "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16, "temperature": 0}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return "/v1/chat/completions", json.dumps(body).encode()
    body = {"model": "bench-model", "input": PROMPT, "max_output_tokens": 16, "temperature": 0}
    if path == "responses":
        body["store"] = False
    if stream:
        body["stream"] = True
    return "/v1/responses", json.dumps(body).encode()


def start(tmp: Path) -> tuple[list[subprocess.Popen], str, str]:
    """The mock and the gateway: their processes and base URLs."""
    mock_port, gw_port = loadgen.free_port(), loadgen.free_port()
    procs = [loadgen.start([sys.executable, str(ROOT / "loadtests/mock_upstream.py"), "--port", str(mock_port)],
                           cpus="0")]
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps({
        "targets": {"mock": {"kind": "vllm", "base_urls": [f"http://127.0.0.1:{mock_port}/v1"], "timeout_s": 30}},
        "models": {"bench-model": {"routes": [{"target": "mock", "model": "mock-model"}]}}}))
    procs.append(loadgen.start([str(ROOT / ".venv/bin/tuneloop"), "serve", "--config", str(cfg),
                                "--host", "127.0.0.1", "--port", str(gw_port)], cpus="1",
                               env={"TUNELOOP_HOME": str(tmp / "home")}, log_path=str(tmp / "gateway.log")))
    mock, gw = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{gw_port}"
    loadgen.wait_ready(mock + "/v1/models", procs[0])
    loadgen.wait_ready(gw + "/health/live", procs[1])
    return procs, mock, gw


def measure(base: str, path: str, conc: int, stream: bool, duration: float) -> loadgen.Result:
    url_path, body = request(path, stream)
    return loadgen.run_raw_subprocess(base + url_path, body, conc, duration, stream=stream,
                                      max_requests=200_000, cpus="0")


def latency(r: loadgen.Result, stream: bool) -> tuple[float, float]:
    return (r.ttft_p50_ms, r.ttft_p99_ms) if stream else (r.p50_ms, r.p99_ms)


def med(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def run(args: argparse.Namespace) -> tuple[list[dict], dict[str, float]]:
    """Every (mode, path) cell per round; rows of medians and the ratio per mode."""
    cells: dict[tuple[str, str], list[tuple[loadgen.Result, float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        procs: list[subprocess.Popen] = []
        try:
            procs, mock, gw = start(Path(d))
            for path in PATHS[1:]:  # warm-up: pools filled, first-use imports done
                measure(gw, path, 4, False, 0.5)
            for _ in range(args.rounds):
                for mode, conc, stream in MODES:
                    got, cpu = {}, {}
                    for p in PATHS:
                        before = loadgen.tree_cpu_s(procs[1].pid)
                        got[p] = measure(mock if p == "direct" else gw, p, conc, stream, args.duration)
                        used = loadgen.tree_cpu_s(procs[1].pid) - before
                        cpu[p] = used / got[p].requests * 1e6 if got[p].requests and p != "direct" else math.nan
                    direct = latency(got["direct"], stream)
                    for p, r in got.items():
                        p50, p99 = latency(r, stream)
                        cells.setdefault((mode, p), []).append((r, p50 - direct[0], p99 - direct[1], cpu[p]))
        finally:
            for p in reversed(procs):
                loadgen.stop(p)
    rows, ratios = [], {}
    for mode, _, stream in MODES:
        chat_added = [a for _, a, _, _ in cells[(mode, "chat")]]
        for path in PATHS:
            runs = cells[(mode, path)]
            added = [a for _, a, _, _ in runs]
            ratio = med([a / c for a, c in zip(added, chat_added, strict=True) if c > 0]) \
                if path.startswith("responses") else float("nan")
            if path == "responses":
                ratios[mode] = ratio
            rows.append({"mode": mode, "path": path, "rps": med([r.rps for r, _, _, _ in runs]),
                         "p50": med([latency(r, stream)[0] for r, _, _, _ in runs]),
                         "p99": med([latency(r, stream)[1] for r, _, _, _ in runs]),
                         "added_p50": med(added) if path != "direct" else float("nan"),
                         "added_p99": med([b for _, _, b, _ in runs]) if path != "direct" else float("nan"),
                         "cpu_us": med([c for _, _, _, c in runs]),
                         "errors": sum(r.errors for r, _, _, _ in runs), "ratio": ratio})
    return rows, ratios


def fmt(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:,.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| mode | path | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | × chat added p50 "
             "| gateway CPU µs/req | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['path']} | {r['rps']:,.0f} | {fmt(r['p50'])} | {fmt(r['p99'])} | "
              f"{fmt(r['added_p50'])} | {fmt(r['added_p99'])} | {fmt(r['ratio'])} | {fmt(r['cpu_us'])} | "
              f"{r['errors']} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows, ratios = run(args)
    verdicts = [f"{mode}: responses' added p50 is {fmt(r)}× chat's ({'meets' if r <= GOAL else 'misses'} "
                f"≤ {GOAL}×)" for mode, r in ratios.items()]
    text = table(rows) + "\n\n" + "\n".join(f"- {v}" for v in verdicts)
    print(text)
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        Path(args.out).write_text(
            f"# /v1/responses vs /v1/chat/completions (loadtests/responses_bench.py)\n\n"
            f"Run {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f} · "
            f"{args.rounds} interleaved round(s) × {args.duration:g} s per cell, medians (added latency and "
            f"ratios taken within each round) · gateway alone on CPU 1, mock + asyncio load generator on "
            f"CPU 0 · every interaction logged · commit {commit} (+ working tree)\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
