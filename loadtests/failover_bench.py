"""Failover: requests/s and p99 while one of a target's two replicas is down.

One run, loopback only, bounded: TuneLoop with a target of two healthy replicas (two mock
upstreams) is the baseline; then the same with one replica's port closed (nothing
listens: connections are refused), and with one replica that answers 503 to everything.
Each is driven at c16 for --duration seconds with wrk, or without it with the load
generator's asyncio client (the gateway's own HTTP/1.1 pool; the results file's heading says
which). Printed: req/s, p50, p99, errors, and the ratio to the healthy baseline. The
breaker opens on the bad replica after a few failures; refused connections move to the
other replica within the same request.

    .venv/bin/python loadtests/failover_bench.py [--duration 5] [--out loadtests/results/failover.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"model": "bench-model", "messages": [
    {"role": "user", "content": "Where is my parcel? Order 12345."}], "max_tokens": 32}).encode()

FAULTY_503 = r'''
import asyncio, sys
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            n = int(next((x.split(b":")[1] for x in lines if x.lower().startswith(b"content-length")), b"0"))
            await reader.readexactly(n)
            body = b'{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}'
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
'''


def config(path: Path, urls: list[str]) -> None:
    path.write_text(json.dumps({
        "targets": {"mock": {"kind": "vllm", "base_urls": urls, "timeout_s": 10,
                             "breaker_failures": 3, "breaker_cooldown_s": 5}},
        "models": {"bench-model": {"routes": [{"target": "mock", "model": "mock-model"}],
                                   "retries": 1, "log": "none"}}}))


def load(url: str, duration: float) -> loadgen.Result:
    if loadgen.have_wrk():
        return loadgen.run_wrk(url, BODY, 16, duration, cpus="0")
    return loadgen.run_raw_subprocess(url, BODY, 16, duration, cpus="0")


def run(name: str, urls: list[str], tmp: Path, duration: float, procs: list) -> dict:
    cfg, port = tmp / f"{name}.json", loadgen.free_port()
    config(cfg, urls)
    gw = loadgen.start([str(ROOT / ".venv/bin/tuneloop"), "serve", "--config", str(cfg), "--port", str(port)],
                       cpus="1", env={"TUNELOOP_HOME": str(tmp / name)}, log_path=str(tmp / f"{name}.log"))
    procs.append(gw)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    loadgen.wait_ready(f"http://127.0.0.1:{port}/health/live", gw)
    load(url, 1)  # warm-up: pools filled, breaker settled
    r = load(url, duration)
    loadgen.stop(gw)
    return {"name": name, "rps": r.rps, "p50": r.p50_ms, "p99": r.p99_ms, "errors": r.errors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    procs: list = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        try:
            ports = [loadgen.free_port() for _ in range(3)]
            for p in ports[:2]:
                procs.append(loadgen.start([sys.executable, str(ROOT / "loadtests/mock_upstream.py"),
                                            "--port", str(p)], cpus="0"))
            (tmp / "faulty.py").write_text(FAULTY_503)
            procs.append(loadgen.start([sys.executable, str(tmp / "faulty.py"), str(ports[2])], cpus="0"))
            for p in ports[:2]:
                loadgen.wait_ready(f"http://127.0.0.1:{p}/v1/models")
            time.sleep(0.5)
            up = [f"http://127.0.0.1:{p}/v1" for p in ports]
            dead = f"http://127.0.0.1:{loadgen.free_port()}/v1"
            rows = [run("two healthy replicas", up[:2], tmp, args.duration, procs),
                    run("one replica refusing connections", [up[0], dead], tmp, args.duration, procs),
                    run("one replica answering 503", [up[0], up[2]], tmp, args.duration, procs)]
        finally:
            for p in procs:
                loadgen.stop(p)
    base = rows[0]["rps"] or 1
    lines = ["| replicas | req/s | p50 ms | p99 ms | errors | × healthy |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | "
              f"{r['rps'] / base:.2f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        tool = "wrk" if loadgen.have_wrk() else "asyncio client"
        Path(args.out).write_text(f"# Failover (loadtests/failover_bench.py, {tool} c16, {args.duration:g} s, "
                                  f"{time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f})\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
