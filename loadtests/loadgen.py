"""Load generation for the gateway benchmarks: wrk for plain request/response, and an asyncio
client for streaming (time to first SSE event) or when wrk is missing. That client is the
gateway's own: its HTTP/1.1 keep-alive pool (``gateway.providers.http1``) and SSE parser
(``gateway.sse``); the timing is taken here, around them.

Every run is bounded by time (``duration``) and by count (``max_requests``, raw client; wrk
is time-bounded and also killed by a wall-clock timeout). Targets must be loopback.

Also holds the small process helpers shared by the benchmark drivers: start a child in
its own process group (optionally pinned to CPUs with ``taskset``), wait for it to answer,
and kill the whole group.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gateway.providers.http1 import Pool  # noqa: E402
from gateway.sse import SSEParser  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_loopback(url: str) -> urllib.parse.SplitResult:
    u = urllib.parse.urlsplit(url)
    if u.hostname not in LOOPBACK:
        raise ValueError(f"load generation targets loopback only, not {u.hostname!r}")
    return u


@dataclass
class Result:
    tool: str
    concurrency: int
    duration_s: float
    requests: int = 0
    errors: int = 0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    ttft_p50_ms: float = float("nan")
    ttft_p99_ms: float = float("nan")
    error_detail: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- wrk

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = [==[%BODY%]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d,\"p50\":%d,\"p90\":%d,\"p99\":%d,\"mean\":%.1f,\"max\":%d}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, body: bytes, concurrency: int, duration: float, threads: int = 1,
            cpus: str | None = None) -> Result:
    _check_loopback(url)
    threads = max(1, min(threads, concurrency))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA.replace("%BODY%", body.decode()))
        script = f.name
    cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
           "--timeout", "10s", "-s", script, url]
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    finally:
        os.unlink(script)
    line = next((x for x in p.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {p.stdout[-500:]} {p.stderr[-500:]}")
    d = json.loads(line[8:])
    errs = {k: d[k] for k in ("connect", "read", "write", "status", "timeout") if d[k]}
    dur = d["duration_us"] / 1e6
    return Result("wrk", concurrency, dur, requests=d["requests"], errors=sum(errs.values()),
                  rps=d["requests"] / dur if dur else 0.0, p50_ms=d["p50"] / 1000,
                  p90_ms=d["p90"] / 1000, p99_ms=d["p99"] / 1000, error_detail=errs)


# ------------------------------------------------ asyncio client (the gateway's pool)

def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


HEADERS = b"content-type: application/json\r\nauthorization: Bearer bench\r\n"


async def _one(pool: Pool, path: bytes, body: bytes, stream: bool) -> tuple[int, bool, float | None, float]:
    """One request: status, whether the reply is whole, time of its first SSE event, time it ended."""
    ex = await pool.request(b"POST", path, body, HEADERS)
    if not stream or ex.status != 200:
        data = await ex.read()  # a chat completion has choices, a Response (/v1/responses) output
        ok = ex.status == 200 and data[:1] == b"{" and (b'"choices"' in data or b'"output"' in data)
        return ex.status, ok, None, time.perf_counter()
    parser, t_first, completed = SSEParser(), None, False
    async for piece in ex.iter_body():  # read to the end, so the connection is reused
        events = parser.feed(piece)
        if events and t_first is None:
            t_first = time.perf_counter()
        # a Responses stream ends with response.completed, not [DONE]
        completed = completed or any(b'"response.completed"' in e[:48] for e in events)
    return ex.status, (parser.done or completed) and t_first is not None, t_first, time.perf_counter()


async def _raw_load(url: str, body: bytes, concurrency: int, duration: float,
                    max_requests: int, stream: bool, warmup: float) -> Result:
    u = _check_loopback(url)
    pool = Pool(u.hostname or "127.0.0.1", u.port or 80, limit=concurrency)
    path = (u.path or "/").encode()
    lat: list[float] = []
    ttft: list[float] = []
    errors: dict[str, int] = {}
    count = 0
    t0 = time.perf_counter()
    t_measure = t0 + warmup
    t_end = t_measure + duration

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def worker() -> None:
        nonlocal count
        while True:
            t = time.perf_counter()
            if t >= t_end or count >= max_requests:
                break
            try:
                status, ok, t_first, t_done = await _one(pool, path, body, stream)
            except OSError as e:  # http1's ConnectError and ProtocolError are OSErrors
                if t >= t_measure:
                    err(type(e).__name__)
                await asyncio.sleep(0.01)
                continue
            if t < t_measure:
                continue
            if not ok:
                err(f"status{status}" if status != 200 else "bad_body")
                continue
            count += 1
            lat.append(t_done - t)
            if t_first is not None:
                ttft.append(t_first - t)

    # no timer per request (one costs ~7 us, a fifth of the client's work per request): a
    # request still out 30 s after the end is cancelled and counted as a timeout
    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        done, stuck = await asyncio.wait(workers, timeout=max(0.0, t_end - time.perf_counter()) + 30)
        for task in stuck:
            task.cancel()
            err("TimeoutError")
        await asyncio.gather(*stuck, return_exceptions=True)
        for task in done:
            task.result()  # a worker's unexpected error is the run's
    finally:
        pool.close()
    elapsed = min(time.perf_counter(), t_end) - t_measure if count < max_requests else (
        time.perf_counter() - t_measure)
    ms = 1000.0
    return Result("raw-stream" if stream else "raw", concurrency, elapsed, requests=count,
                  errors=sum(errors.values()), rps=count / elapsed if elapsed > 0 else 0.0,
                  p50_ms=_pct(lat, 50) * ms, p90_ms=_pct(lat, 90) * ms, p99_ms=_pct(lat, 99) * ms,
                  ttft_p50_ms=_pct(ttft, 50) * ms, ttft_p99_ms=_pct(ttft, 99) * ms,
                  error_detail=errors)


def run_raw(url: str, body: bytes, concurrency: int, duration: float, stream: bool = False,
            max_requests: int = 2_000_000, warmup: float = 0.5) -> Result:
    """Raw asyncio load in this process (use ``run_raw_subprocess`` to pin it)."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(_raw_load(url, body, concurrency, duration, max_requests, stream, warmup))


def run_raw_subprocess(url: str, body: bytes, concurrency: int, duration: float,
                       stream: bool = False, max_requests: int = 2_000_000,
                       cpus: str | None = None) -> Result:
    """The raw client in a child process (pinned with taskset when ``cpus`` is given)."""
    _check_loopback(url)
    cmd = [sys.executable, os.path.abspath(__file__), "--url", url, "--body", body.decode(),
           "-c", str(concurrency), "-d", str(duration), "--max-requests", str(max_requests),
           "--json"] + (["--stream"] if stream else [])
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RAWJSON ")), None)
    if line is None:
        raise RuntimeError(f"raw load generator failed: {p.stderr[-800:]}")
    return Result(**json.loads(line[8:]))


# ------------------------------------------------------------------ processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], cpus: str | None = None, env: dict | None = None,
          log_path: str | None = None, cwd: str | None = None) -> subprocess.Popen:
    """Start a child in its own process group (so that all its children die with it)."""
    if cpus and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpus] + cmd
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                            start_new_session=True)


def stop(p: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every live descendant (its log writer
    child, say), plus what its waited-for children used: read from /proc, 0 where there is none."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu s)
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        stats[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo += [c for c, (parent, _) in stats.items() if parent == p]
    return total


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0,
               method: str = "GET", body: bytes | None = None) -> None:
    """Poll url until it answers 2xx (or the process dies, or time runs out)."""
    import urllib.request

    _check_loopback(url)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            req = urllib.request.Request(url, data=body, method=method,
                                         headers={"content-type": "application/json",
                                                  "authorization": "Bearer bench"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if 200 <= r.status < 300:
                    r.read()
                    return
        except Exception as e:  # noqa: BLE001 - keep polling
            last = e
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last!r}")


def main() -> None:
    import argparse
    from dataclasses import asdict

    ap = argparse.ArgumentParser(description="raw asyncio load generator (loopback only)")
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", default='{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}')
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("-d", "--duration", type=float, default=5.0)
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = run_raw(a.url, a.body.encode(), a.concurrency, a.duration, a.stream, a.max_requests)
    if a.json:
        print("RAWJSON " + json.dumps(asdict(r)))
    else:
        print(r)


if __name__ == "__main__":
    main()
