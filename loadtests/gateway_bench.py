"""Gateway overhead against a fast mock upstream on loopback, all systems in one run.

Systems (each: a start command and a base URL):
  direct          straight to the mock upstream (the baseline for "added" latency)
  passthrough     the thinnest FastAPI + aiohttp pass-through (loadtests/passthrough.py)
  tuneloop        `tuneloop serve` with routing, logging (SQLite in a temp TUNELOOP_HOME), metrics
  tuneloop-nolog  the same with `log: none` on the model
  litellm         LiteLLM's proxy (from a separate venv), 1 worker, no database

Modes: non-stream at concurrency 1, 16, 64 (wrk, or the raw asyncio client without wrk);
stream at concurrency 16 (raw asyncio client: time to first SSE event, and total time).

Every load run is bounded by time (``--duration``) and count; everything targets 127.0.0.1;
every process the bench starts is killed on exit, Ctrl-C or error.

CPU placement (default, 2 cores): the system under test runs alone on CPU 1; the mock
upstream and the load generator share CPU 0. ``--no-pin`` turns this off.

    python loadtests/gateway_bench.py [--duration 5] [--systems direct,passthrough,tuneloop,litellm]
                                      [--out loadtests/results/gateway.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import loadgen  # noqa: E402

PY = sys.executable
DEFAULT_TUNELOOP = os.path.join(ROOT, ".venv", "bin", "tuneloop")
DEFAULT_LITELLM = "/tmp/litellm-venv/bin/litellm"
ALL_SYSTEMS = ["direct", "passthrough", "tuneloop", "tuneloop-nolog", "litellm"]
MODES = [("ns", 1), ("ns", 16), ("ns", 64), ("stream", 16)]


@dataclass
class System:
    name: str
    model: str
    cmd: list[str] | None = None  # None: nothing to start (direct)
    env: dict = field(default_factory=dict)
    base_url: str = ""
    ready_path: str = "/v1/chat/completions"
    skip: str = ""  # why it cannot run here
    proc: subprocess.Popen | None = None
    start_timeout: float = 90.0


def _body(model: str, stream: bool) -> bytes:
    d = {"model": model, "messages": [{"role": "user", "content": "Say hello in one word."}],
         "max_tokens": 16, "temperature": 0}
    if stream:
        d["stream"] = True
        d["stream_options"] = {"include_usage": True}
    return orjson.dumps(d)


def _tuneloop_config(path: str, mock_port: int, log_none: bool) -> None:
    log_line = "    log: none\n" if log_none else ""
    with open(path, "w") as f:
        f.write(
            "targets:\n"
            f"  mock: {{kind: vllm, base_urls: [\"http://127.0.0.1:{mock_port}/v1\"], timeout_s: 30}}\n"
            "models:\n"
            "  bench-model:\n"
            "    routes: [{target: mock, model: mock-model}]\n" + log_line
        )


def _litellm_config(path: str, mock_port: int) -> None:
    with open(path, "w") as f:
        f.write(
            "model_list:\n"
            "  - model_name: bench-model\n"
            "    litellm_params:\n"
            "      model: openai/mock-model\n"
            f"      api_base: http://127.0.0.1:{mock_port}/v1\n"
            "      api_key: sk-bench\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
            "  drop_params: true\n"
        )


def tuneloop_available(exe: str) -> str:
    """'' if `tuneloop serve` looks startable, else why not."""
    if not os.path.exists(exe):
        return f"{exe} not found (gateway CLI not installed yet)"
    try:
        p = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`tuneloop serve --help` failed: {e}"
    if p.returncode != 0:
        return f"`tuneloop serve --help` exited {p.returncode}: {(p.stderr or p.stdout)[-200:]}"
    return ""


def make_systems(names: list[str], mock_port: int, tmp: str, args) -> list[System]:
    out = []
    for name in names:
        port = loadgen.free_port()
        base = f"http://127.0.0.1:{port}"
        if name == "direct":
            out.append(System(name, "mock-model", base_url=f"http://127.0.0.1:{mock_port}"))
        elif name == "passthrough":
            out.append(System(name, "mock-model", base_url=base, cmd=[
                PY, "-m", "uvicorn", "passthrough:app", "--app-dir", HERE, "--host", "127.0.0.1",
                "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
                "--no-access-log", "--log-level", "warning"],
                env={"PASSTHROUGH_UPSTREAM": f"http://127.0.0.1:{mock_port}"}))
        elif name in ("tuneloop", "tuneloop-nolog"):
            why = tuneloop_available(args.tuneloop)
            home = os.path.join(tmp, f"home-{name}")
            os.makedirs(home, exist_ok=True)
            cfg = os.path.join(tmp, f"{name}.yaml")
            _tuneloop_config(cfg, mock_port, log_none=name == "tuneloop-nolog")
            out.append(System(name, "bench-model", base_url=base, skip=why, cmd=[
                args.tuneloop, "serve", "--config", cfg, "--host", "127.0.0.1",
                "--port", str(port)], env={"TUNELOOP_HOME": home}))
        elif name == "litellm":
            why = "" if os.path.exists(args.litellm) else (
                f"{args.litellm} not found (python3.11 -m venv /tmp/litellm-venv && "
                "/tmp/litellm-venv/bin/pip install 'litellm[proxy]')")
            cfg = os.path.join(tmp, "litellm.yaml")
            _litellm_config(cfg, mock_port)
            out.append(System(name, "bench-model", base_url=base, skip=why, cmd=[
                args.litellm, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                "--num_workers", "1"],
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                     "LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True"},
                start_timeout=180.0))
        else:
            raise SystemExit(f"unknown system {name!r}; known: {', '.join(ALL_SYSTEMS)}")
    return out


@dataclass
class Row:
    system: str
    mode: str
    conc: int
    res: loadgen.Result | None
    note: str = ""


def run_mode(sysm: System, mode: str, conc: int, duration: float, cpus: str | None,
             use_wrk: bool) -> loadgen.Result:
    url = sysm.base_url + "/v1/chat/completions"
    if mode == "stream":
        return loadgen.run_raw_subprocess(url, _body(sysm.model, True), conc, duration,
                                          stream=True, max_requests=args_max_requests, cpus=cpus)
    body = _body(sysm.model, False)
    if use_wrk:
        return loadgen.run_wrk(url, body, conc, duration, cpus=cpus)
    return loadgen.run_raw_subprocess(url, body, conc, duration, max_requests=args_max_requests,
                                      cpus=cpus)


args_max_requests = 2_000_000


def fmt(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render(rows: list[Row], meta: dict) -> str:
    by = {(r.system, r.mode, r.conc): r for r in rows}
    lines = [
        "| system | mode | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors "
        "| × passthrough req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        label = f"stream c{r.conc} (TTFT)" if r.mode == "stream" else f"non-stream c{r.conc}"
        if r.res is None:
            lines.append(f"| {r.system} | {label} | skipped: {r.note} | | | | | | |")
            continue
        x = r.res
        if r.mode == "stream":
            p50, p99 = x.ttft_p50_ms, x.ttft_p99_ms
        else:
            p50, p99 = x.p50_ms, x.p99_ms
        d = by.get(("direct", r.mode, r.conc))
        if d is not None and d.res is not None and r.system != "direct":
            dp50 = d.res.ttft_p50_ms if r.mode == "stream" else d.res.p50_ms
            dp99 = d.res.ttft_p99_ms if r.mode == "stream" else d.res.p99_ms
            add50, add99 = fmt(p50 - dp50), fmt(p99 - dp99)
        else:
            add50 = add99 = "—"
        pt = by.get(("passthrough", r.mode, r.conc))
        ratio = (f"{x.rps / pt.res.rps:.2f}" if pt is not None and pt.res is not None
                 and pt.res.rps > 0 and r.system != "direct" else "—")
        errs = str(x.errors) + (f" {x.error_detail}" if x.errors else "")
        lines.append(f"| {r.system} | {label} | {x.rps:,.0f} | {fmt(p50)} | {fmt(p99)} | "
                     f"{add50} | {add99} | {errs} | {ratio} |")
    goals = goal_lines(by)
    head = (f"Run {meta['when']} · {meta['host']} · {meta['cpus']} CPUs · load per mode "
            f"{meta['duration']} s · {meta['placement']} · load generator: {meta['loadgen']} · "
            f"mock: {meta['mock']} · commit {meta['commit']}")
    return head + "\n\n" + "\n".join(lines) + ("\n\n" + "\n".join(goals) if goals else "") + "\n"


def goal_lines(by: dict) -> list[str]:
    out = []

    def get(s, m, c):
        r = by.get((s, m, c))
        return r.res if r is not None else None

    pt16, pts16 = get("passthrough", "ns", 16), get("passthrough", "stream", 16)
    d1, ds16 = get("direct", "ns", 1), get("direct", "stream", 16)
    for s in ("tuneloop", "tuneloop-nolog", "litellm"):
        ns16, st16, ns1 = get(s, "ns", 16), get(s, "stream", 16), get(s, "ns", 1)
        if ns16 is None:
            continue
        parts = []
        if pt16:
            ok = ns16.rps >= 2 * pt16.rps
            parts.append(f"non-stream c16 {ns16.rps / pt16.rps:.2f}× passthrough "
                         f"({'meets' if ok else 'misses'} ≥ 2×)")
        if st16 and pts16:
            ok = st16.rps >= 2 * pts16.rps
            parts.append(f"stream c16 {st16.rps / pts16.rps:.2f}× passthrough "
                         f"({'meets' if ok else 'misses'} ≥ 2×)")
        if ns1 and d1:
            add = ns1.p50_ms - d1.p50_ms
            parts.append(f"added p50 c1 {add:.2f} ms ({'meets' if add < 1 else 'misses'} < 1 ms)")
        if st16 and ds16:
            add = st16.ttft_p50_ms - ds16.ttft_p50_ms
            parts.append(f"added TTFT p50 c16 {add:.2f} ms "
                         f"({'meets' if add < 2 else 'misses'} < 2 ms)")
        errs = sum(x.errors for x in (ns16, st16, ns1, get(s, "ns", 64)) if x)
        parts.append(f"errors {errs}")
        out.append(f"- **{s}**: " + "; ".join(parts))
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main(argv: list[str] | None = None) -> int:
    global args_max_requests
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per mode")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded load first")
    ap.add_argument("--systems", default="direct,passthrough,tuneloop,tuneloop-nolog,litellm")
    ap.add_argument("--modes", default="ns1,ns16,ns64,stream16")
    ap.add_argument("--max-requests", type=int, default=2_000_000,
                    help="count bound for the raw client")
    ap.add_argument("--tuneloop", default=DEFAULT_TUNELOOP)
    ap.add_argument("--litellm", default=DEFAULT_LITELLM)
    ap.add_argument("--mock-chunks", type=int, default=8)
    ap.add_argument("--mock-chunk-delay-ms", type=float, default=0.0)
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--no-wrk", action="store_true", help="use the raw asyncio client only")
    ap.add_argument("--out", default="", help="write the markdown table here too")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args(argv)
    args_max_requests = args.max_requests

    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    if "direct" not in names:
        names.insert(0, "direct")  # the baseline is always measured
    modes = []
    for m in args.modes.split(","):
        m = m.strip()
        kind = "stream" if m.startswith("stream") else "ns"
        modes.append((kind, int(m[len(kind):])))
    pin = not args.no_pin and shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2
    cpu_sut, cpu_gen = ("1", "0") if pin else (None, None)
    use_wrk = loadgen.have_wrk() and not args.no_wrk

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = tempfile.mkdtemp(prefix="gwbench-")
    started: list[subprocess.Popen] = []
    rows: list[Row] = []
    mock_port = loadgen.free_port()
    try:
        mock = loadgen.start(
            [PY, os.path.join(HERE, "mock_upstream.py"), "--port", str(mock_port),
             "--chunks", str(args.mock_chunks),
             "--chunk-delay-ms", str(args.mock_chunk_delay_ms)],
            cpus=cpu_gen, log_path=os.path.join(tmp, "mock.log"))
        started.append(mock)
        loadgen.wait_ready(f"http://127.0.0.1:{mock_port}/health", mock)
        systems = make_systems(names, mock_port, tmp, args)
        for s in systems:
            if s.skip:
                print(f"[bench] {s.name}: skipped: {s.skip}", file=sys.stderr, flush=True)
                rows += [Row(s.name, m, c, None, s.skip) for m, c in modes]
                continue
            if s.cmd:
                print(f"[bench] starting {s.name}", file=sys.stderr, flush=True)
                s.proc = loadgen.start(s.cmd, cpus=cpu_sut, env=s.env, cwd=tmp,
                                       log_path=os.path.join(tmp, f"{s.name}.log"))
                started.append(s.proc)
                try:
                    loadgen.wait_ready(s.base_url + s.ready_path, s.proc,
                                       timeout=s.start_timeout, method="POST",
                                       body=_body(s.model, False))
                except RuntimeError as e:
                    tail = _tail(os.path.join(tmp, f"{s.name}.log"))
                    print(f"[bench] {s.name} did not start: {e}\n{tail}", file=sys.stderr)
                    rows += [Row(s.name, m, c, None, "did not start") for m, c in modes]
                    loadgen.stop(s.proc)
                    continue
            try:
                if args.warmup > 0:
                    run_mode(s, "ns", 16, args.warmup, cpu_gen, use_wrk)
                for m, c in modes:
                    r = run_mode(s, m, c, args.duration, cpu_gen, use_wrk)
                    rows.append(Row(s.name, m, c, r))
                    ttft = f" ttft p50 {r.ttft_p50_ms:.2f} ms" if m == "stream" else ""
                    print(f"[bench] {s.name:15s} {m:6s} c{c:<3d} {r.rps:9,.0f} req/s "
                          f"p50 {r.p50_ms:7.2f} ms p99 {r.p99_ms:7.2f} ms{ttft} "
                          f"errors {r.errors}", file=sys.stderr, flush=True)
            except Exception as e:  # noqa: BLE001 - a failing system must not stop the others
                print(f"[bench] {s.name} failed: {e!r}", file=sys.stderr, flush=True)
                done = {(r.mode, r.conc) for r in rows if r.system == s.name}
                rows += [Row(s.name, m, c, None, f"failed: {type(e).__name__}")
                         for m, c in modes if (m, c) not in done]
            finally:
                loadgen.stop(s.proc)
    except KeyboardInterrupt:
        print("[bench] interrupted", file=sys.stderr)
        return 130
    finally:
        for p in reversed(started):
            loadgen.stop(p)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"[bench] logs kept in {tmp}", file=sys.stderr)

    # stable order: systems as given, modes as given
    order = {n: i for i, n in enumerate(names)}
    morder = {m: i for i, m in enumerate(modes)}
    rows.sort(key=lambda r: (morder[(r.mode, r.conc)], order[r.system]))
    meta = {
        "when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "host": platform.node() or "?", "cpus": os.cpu_count(), "duration": args.duration,
        "placement": ("system under test on CPU 1; mock + load generator on CPU 0"
                      if pin else "no CPU pinning"),
        "loadgen": ("wrk (non-stream), raw asyncio client (stream)" if use_wrk
                    else "raw asyncio client"),
        "mock": f"{args.mock_chunks} chunks, {args.mock_chunk_delay_ms} ms apart",
        "commit": git_commit(),
    }
    table = render(rows, meta)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Gateway overhead (loadtests/gateway_bench.py)\n\n" + table)
    return 0


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
