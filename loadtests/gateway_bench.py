"""Gateway overhead against a fast mock upstream on loopback, all systems in one run.

Systems (each: a start command and a base URL):
  direct          straight to the mock upstream (the baseline for "added" latency)
  passthrough     the thinnest FastAPI + aiohttp pass-through (loadtests/passthrough.py)
  tuneloop        `tuneloop serve` with routing, logging (SQLite in a temp TUNELOOP_HOME), metrics
  tuneloop-writer0  the same, its log-writer child process pinned to CPU 0 (off the gateway's core)
  tuneloop-nolog  the same with `log: none` on the model
  tuneloop-w2     `tuneloop serve --workers 2`, on both CPUs (the scaling of a second worker; it shares
                  CPU 0 with the mock and the load generator, so on 2 cores it cannot reach 2x)
  litellm         LiteLLM's proxy (from a separate venv), 1 worker, no database
  tensorzero      TensorZero's Rust gateway (from a separate venv, loadtests/tensorzero_gateway.py),
                  its OpenAI-compatible endpoint, observability off

Modes: non-stream at concurrency 1, 16, 64 (wrk, or the asyncio client without wrk);
stream at concurrency 16 (asyncio client: time to first SSE event, and total time). The asyncio
client is the gateway's own HTTP/1.1 pool and SSE parser (see loadgen.py).

Every load run is bounded by time (``--duration``) and count; everything targets 127.0.0.1;
every process the bench starts is killed on exit, Ctrl-C or error.

CPU placement (default, 2 cores): the system under test runs alone on CPU 1; the mock
upstream and the load generator share CPU 0. ``--no-pin`` turns this off.

    python loadtests/gateway_bench.py [--duration 5] [--systems direct,passthrough,tuneloop,litellm,tensorzero]
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
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gateway_goals  # noqa: E402
import loadgen  # noqa: E402
import tensorzero_gateway  # noqa: E402

PY = sys.executable
DEFAULT_TUNELOOP = os.path.join(ROOT, ".venv", "bin", "tuneloop")
DEFAULT_LITELLM = "/tmp/litellm-venv/bin/litellm"
ALL_SYSTEMS = ["direct", "passthrough", "tuneloop", "tuneloop-writer0", "tuneloop-nolog", "tuneloop-w2", "litellm",
               "tensorzero"]
MODE_KINDS = ("ns", "stream", "paced")  # paced: stream from an upstream that paces its chunks


@dataclass
class System:
    name: str
    model: str
    paced_model: str = ""
    cmd: list[str] | None = None  # None: nothing to start (direct)
    env: dict = field(default_factory=dict)
    base_url: str = ""  # set from the child's stdout when url_line is given
    path: str = "/v1/chat/completions"  # chat completions, also polled for readiness
    url_line: str = ""  # the child prints this prefix + its base URL on a line of its own
    note: str = ""  # how it was set up, printed under the table
    skip: str = ""  # why it cannot run here
    cpus: str | None = None  # its CPUs when pinning, if not the system-under-test CPU
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
            "    routes: [{target: mock, model: mock-model}]\n" + log_line +
            "  bench-model-paced:\n"
            "    routes: [{target: mock, model: mock-paced}]\n" + log_line
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
            "  - model_name: bench-model-paced\n"
            "    litellm_params:\n"
            "      model: openai/mock-paced\n"
            f"      api_base: http://127.0.0.1:{mock_port}/v1\n"
            "      api_key: sk-bench\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
            "  drop_params: true\n"
            # 1.106 refuses to start without a master key unless told; the other systems run
            # without auth too
            "general_settings:\n"
            "  dangerously_permit_weak_or_unset_master_key: true\n"
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
            out.append(System(name, "mock-model", "mock-paced",
                              base_url=f"http://127.0.0.1:{mock_port}"))
        elif name == "passthrough":
            out.append(System(name, "mock-model", "mock-paced", base_url=base, cmd=[
                PY, "-m", "uvicorn", "passthrough:app", "--app-dir", HERE, "--host", "127.0.0.1",
                "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
                "--no-access-log", "--log-level", "warning"],
                env={"PASSTHROUGH_UPSTREAM": f"http://127.0.0.1:{mock_port}"}))
        elif name in ("tuneloop", "tuneloop-writer0", "tuneloop-nolog", "tuneloop-w2"):
            why = tuneloop_available(args.tuneloop)
            home = os.path.join(tmp, f"home-{name}")
            os.makedirs(home, exist_ok=True)
            cfg = os.path.join(tmp, f"{name}.yaml")
            _tuneloop_config(cfg, mock_port, log_none=name == "tuneloop-nolog")
            two = name == "tuneloop-w2"
            out.append(System(name, "bench-model", "bench-model-paced", base_url=base, skip=why, cmd=[
                args.tuneloop, "serve", "--config", cfg, "--host", "127.0.0.1",
                "--port", str(port)] + (["--workers", "2"] if two else []), env={"TUNELOOP_HOME": home, **(
                    # the log writer child on the load generator's core instead of any core
                    {"TUNELOOP_LOG_WRITER_CPUS": "0"} if name == "tuneloop-writer0" else {})},
                cpus="0,1" if two else None))
        elif name == "litellm":
            why = "" if os.path.exists(args.litellm) else (
                f"{args.litellm} not found (python3.11 -m venv /tmp/litellm-venv && "
                "/tmp/litellm-venv/bin/pip install 'litellm[proxy]')")
            cfg = os.path.join(tmp, "litellm.yaml")
            _litellm_config(cfg, mock_port)
            out.append(System(name, "bench-model", "bench-model-paced", base_url=base, skip=why, cmd=[
                args.litellm, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                "--num_workers", "1"],
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                     "LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True"},
                start_timeout=180.0))
        elif name == "tensorzero":
            out.append(System(name, **tensorzero_gateway.bench_system(args.tensorzero, mock_port, tmp)))
        else:
            raise SystemExit(f"unknown system {name!r}; known: {', '.join(ALL_SYSTEMS)}")
    return out


Key = tuple  # (system, mode, concurrency)


def run_mode(sysm: System, mode: str, conc: int, duration: float, cpus: str | None,
             use_wrk: bool, max_requests: int) -> loadgen.Result:
    url = sysm.base_url + sysm.path
    if mode in ("stream", "paced"):
        model = sysm.paced_model if mode == "paced" else sysm.model
        return loadgen.run_raw_subprocess(url, _body(model, True), conc, duration,
                                          stream=True, max_requests=max_requests, cpus=cpus)
    body = _body(sysm.model, False)
    if use_wrk:
        return loadgen.run_wrk(url, body, conc, duration, cpus=cpus)
    return loadgen.run_raw_subprocess(url, body, conc, duration, max_requests=max_requests,
                                      cpus=cpus)


def fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _lat(r: loadgen.Result, mode: str) -> tuple[float, float]:
    return (r.ttft_p50_ms, r.ttft_p99_ms) if mode != "ns" else (r.p50_ms, r.p99_ms)


def _med(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def summarize(results: dict[Key, list], key: Key) -> dict | None:
    """Medians over rounds; "added" and ratios are taken within each round, then the median."""
    system, mode, conc = key
    rs = results.get(key)
    if not rs:
        return None
    d = results.get(("direct", mode, conc)) or []
    pt = results.get(("passthrough", mode, conc)) or []
    out = {
        "rps": _med([r.rps for r in rs]),
        "p50": _med([_lat(r, mode)[0] for r in rs]),
        "p99": _med([_lat(r, mode)[1] for r in rs]),
        "errors": sum(r.errors for r in rs),
        "error_detail": {k: v for r in rs for k, v in r.error_detail.items()},
        "rounds": len(rs),
        "add50": float("nan"), "add99": float("nan"), "ratio": float("nan"),
    }
    if system != "direct" and d:
        pairs = list(zip(rs, d, strict=False))
        out["add50"] = _med([_lat(a, mode)[0] - _lat(b, mode)[0] for a, b in pairs])
        out["add99"] = _med([_lat(a, mode)[1] - _lat(b, mode)[1] for a, b in pairs])
    if system != "direct" and pt:
        out["ratio"] = _med([a.rps / b.rps for a, b in zip(rs, pt, strict=False) if b.rps > 0])
    return out


def render(results: dict[Key, list], names: list[str], modes: list, skipped: dict,
           meta: dict) -> str:
    lines = [
        "| system | mode | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors "
        "| × passthrough req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, conc in modes:
        label = {"ns": f"non-stream c{conc}", "stream": f"stream c{conc} (TTFT)",
                 "paced": f"paced stream c{conc} (TTFT)"}[mode]
        for name in names:
            if name in skipped:
                lines.append(f"| {name} | {label} | skipped: {skipped[name]} | | | | | | |")
                continue
            x = summarize(results, (name, mode, conc))
            if x is None:
                lines.append(f"| {name} | {label} | no result | | | | | | |")
                continue
            errs = str(x["errors"]) + (f" {x['error_detail']}" if x["errors"] else "")
            lines.append(
                f"| {name} | {label} | {fmt(x['rps'], 0)} | {fmt(x['p50'])} | {fmt(x['p99'])} | "
                f"{fmt(x['add50'])} | {fmt(x['add99'])} | {errs} | {fmt(x['ratio'])} |")
    goals = gateway_goals.goal_lines(results, names, summarize) + [f"- `{n}`: {t}" for n, t in meta["notes"].items()]
    head = (f"Run {meta['when']} · {meta['host']} · {meta['cpus']} CPUs · {meta['rounds']} "
            f"interleaved round(s) × {meta['duration']} s per cell, medians (added latency and "
            f"ratios taken within each round) · {meta['placement']} · load generator: "
            f"{meta['loadgen']} · mock: {meta['mock']} · commit {meta['commit']}")
    return head + "\n\n" + "\n".join(lines) + ("\n\n" + "\n".join(goals) if goals else "") + "\n"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of load per cell")
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved rounds (every system, every mode, each round)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded load first")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    ap.add_argument("--modes", default="ns1,ns16,ns64,stream16,paced16",
                    help="ns<c>: non-stream; stream<c>: stream, chunks back to back; "
                         "paced<c>: stream, the upstream paces its chunks (--paced-delay-ms)")
    ap.add_argument("--max-requests", type=int, default=2_000_000,
                    help="count bound per cell for the asyncio client")
    ap.add_argument("--tuneloop", default=DEFAULT_TUNELOOP)
    ap.add_argument("--litellm", default=DEFAULT_LITELLM)
    ap.add_argument("--tensorzero", default=tensorzero_gateway.DEFAULT_PYTHON,
                    help="python of the venv with the tensorzero wheel")
    ap.add_argument("--mock-chunks", type=int, default=8)
    ap.add_argument("--mock-chunk-delay-ms", type=float, default=0.0)
    ap.add_argument("--paced-delay-ms", type=float, default=5.0,
                    help="chunk spacing of the paced upstream model (mock-paced)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--no-wrk", action="store_true", help="use the asyncio client only")
    ap.add_argument("--out", default="", help="write the markdown table here too")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    args = ap.parse_args(argv)

    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    for base in ("passthrough", "direct"):
        if base not in names:
            names.insert(0, base)  # the baselines are always measured
    names = sorted(names, key=lambda n: ALL_SYSTEMS.index(n) if n in ALL_SYSTEMS else 99)
    modes = []
    for m in args.modes.split(","):
        m = m.strip()
        kind = next((k for k in MODE_KINDS if m.startswith(k)), None)
        if kind is None or not m[len(kind):].isdigit():
            raise SystemExit(f"bad mode {m!r}: ns<c>, stream<c> or paced<c>")
        modes.append((kind, int(m[len(kind):])))
    pin = bool(not args.no_pin and shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2)
    cpu_sut, cpu_gen = ("1", "0") if pin else (None, None)
    use_wrk = loadgen.have_wrk() and not args.no_wrk

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    tmp = tempfile.mkdtemp(prefix="gwbench-")
    started: list[subprocess.Popen] = []
    results: dict[Key, list] = {}
    skipped: dict[str, str] = {}
    mock_port = loadgen.free_port()

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    try:
        mock = loadgen.start(
            [PY, os.path.join(HERE, "mock_upstream.py"), "--port", str(mock_port),
             "--chunks", str(args.mock_chunks),
             "--chunk-delay-ms", str(args.mock_chunk_delay_ms),
             "--paced-delay-ms", str(args.paced_delay_ms)],
            cpus=cpu_gen, log_path=os.path.join(tmp, "mock.log"))
        started.append(mock)
        loadgen.wait_ready(f"http://127.0.0.1:{mock_port}/health", mock)
        systems = make_systems(names, mock_port, tmp, args)
        running: list[System] = []
        # all systems up at once (idle ones cost nothing), so that rounds can interleave them
        for s in systems:
            if s.skip:
                log(f"{s.name}: skipped: {s.skip}")
                skipped[s.name] = s.skip
                continue
            if s.cmd:
                log(f"starting {s.name}")
                s.proc = loadgen.start(s.cmd, cpus=s.cpus if s.cpus and cpu_sut else cpu_sut, env=s.env, cwd=tmp,
                                       log_path=os.path.join(tmp, f"{s.name}.log"))
                started.append(s.proc)
            running.append(s)
        for s in list(running):
            if s.proc is None:
                continue
            try:
                if s.url_line:
                    s.base_url = _announced_url(os.path.join(tmp, f"{s.name}.log"), s.url_line,
                                                s.proc, s.start_timeout)
                loadgen.wait_ready(s.base_url + s.path, s.proc, timeout=s.start_timeout,
                                   method="POST", body=_body(s.model, False))
            except RuntimeError as e:
                log(f"{s.name} did not start: {e}\n{_tail(os.path.join(tmp, f'{s.name}.log'))}")
                skipped[s.name] = "did not start"
                loadgen.stop(s.proc)
                running.remove(s)
        for s in running:
            if args.warmup > 0:
                run_mode(s, "ns", 16, args.warmup, cpu_gen, use_wrk, args.max_requests)
                run_mode(s, "stream", 16, args.warmup / 2, cpu_gen, use_wrk, args.max_requests)
        for rnd in range(args.rounds):
            for m, c in modes:
                k = rnd % max(1, len(running))  # rotate the order each round against drift
                for s in running[k:] + running[:k]:
                    if s.proc is not None and s.proc.poll() is not None:
                        if s.name not in skipped:
                            log(f"{s.name} exited with {s.proc.returncode}")
                            skipped[s.name] = f"exited with {s.proc.returncode}"
                        continue
                    try:
                        r = run_mode(s, m, c, args.duration, cpu_gen, use_wrk, args.max_requests)
                    except Exception as e:  # noqa: BLE001 - one failing cell must not stop the run
                        log(f"{s.name} {m} c{c} failed: {e!r}")
                        continue
                    results.setdefault((s.name, m, c), []).append(r)
                    ttft = f" ttft p50 {r.ttft_p50_ms:.2f} ms" if m != "ns" else ""
                    log(f"round {rnd} {s.name:15s} {m:6s} c{c:<3d} {r.rps:9,.0f} req/s "
                        f"p50 {r.p50_ms:7.2f} ms p99 {r.p99_ms:7.2f} ms{ttft} errors {r.errors}")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for p in reversed(started):
            loadgen.stop(p)
        if args.keep_tmp:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    meta = {
        "when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "host": platform.node() or "?", "cpus": os.cpu_count(), "duration": args.duration,
        "rounds": args.rounds,
        "placement": ("system under test alone on CPU 1, mock + load generator on CPU 0"
                      if pin else "no CPU pinning"),
        "loadgen": ("wrk -t1 (non-stream), asyncio client on the gateway's http1 pool (stream)" if use_wrk
                    else "asyncio client on the gateway's http1 pool"),
        "mock": (f"{args.mock_chunks} chunks, {args.mock_chunk_delay_ms} ms apart "
                 f"(paced: {args.paced_delay_ms} ms apart)"),
        "commit": git_commit(),
        "notes": {s.name: s.note for s in systems if s.note and s.name not in skipped},
    }
    table = render(results, names, modes, skipped, meta)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Gateway overhead (loadtests/gateway_bench.py)\n\n" + table)
    return 0


def _announced_url(log_path: str, prefix: str, proc: subprocess.Popen, timeout: float) -> str:
    """The base URL a child prints as ``prefix + URL`` (its stdout goes to log_path)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in _tail(log_path, 1 << 16).splitlines():
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before printing its URL")
        time.sleep(0.2)
    raise RuntimeError(f"no {prefix.strip()} line after {timeout}s")


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
