"""Soak: N minutes at concurrency 16 through the real ``tuneloop serve``, per target, with the RSS
of every process sampled, to find leaks, errors and lost log records.

Targets, one after the other, each its own ``tuneloop serve`` and fresh TUNELOOP_HOME (SQLite):
  embedded  ``tuneloop serve`` with no config: the engine child serving SmolLM2-135M on CPU
  mock      a config with one ``vllm`` target, loadtests/mock_upstream.py, and no engine child

Why not one gateway serving both aliases: on 2 cores a shared concurrency of 16 lets the mock's
thousands of req/s take the CPU from the engine's few, so neither target gets a steady c16, and
the gateway's RSS would blend both paths; one after the other, each target gets c16 for N minutes,
a growth is attributable to one path, and each log check is one database. Cost: 2 × N minutes.

Load per target: --concurrency workers, each alternating streamed / plain chat completions
(max_tokens --max-tokens) with unique prompts (a ticket number in the first words, as users'
messages differ: each prompt a new entry of the engine's prefix cache); feedback at --feedback-rps
on random recent completion ids (a rating of ±1, every third also a correction); ``tuneloop dataset
build`` every --dataset-every-s s over the run's rated interactions (sft and dpo in turn). Every
--sample-s s: RSS (VmRSS, via psutil) of every process of the gateway's tree and of the mock, the
machine's load average, and per interval chat 200s and errors. Then the gateway is stopped with
SIGTERM (drains, flushes the log) and every 200's completion id is looked up in ``interactions``
of its SQLite database. Before the embedded run, --prewarm such requests (max_tokens 1) fill the
engine's prefix cache (LRU, 8192 positions: ~360 MiB, 256 entries of these prompts' 32 positions),
so that the measured window sees it evicting, not filling; their samples have t < 0. Evicted
entries (1.4 MiB each) are freed and new ones allocated: glibc's heap may keep some of it, so the
engine's RSS can still creep, slower and slower, after the cache is full (the trend column).

Goals, reported (soak_report.py), not asserted: RSS growth < 5 % per process after warm-up (the
first --warmup-frac of the run), 0 errors, every 200 in the log.

    .venv/bin/python loadtests/soak.py [--minutes 10] [--concurrency 16] [--sample-s 10]
                                       [--targets embedded,mock] [--out loadtests/results/soak.md]

Loopback only; stops by itself; every process it starts dies with it (also on Ctrl-C or an error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
import loadgen  # noqa: E402
import soak_report  # noqa: E402
from soak_lib import CHATS, Phase, chat, check_log, post, sample, stop_serve  # noqa: E402

from gateway.config import DEFAULT_MODEL  # noqa: E402
from gateway.providers.http1 import Pool  # noqa: E402

PY = sys.executable
TARGETS = {"embedded": DEFAULT_MODEL, "mock": "soak-mock"}  # target -> the alias called
REQ_TIMEOUT_S, BUILD_TIMEOUT_S = 120.0, 300.0
# the ticket number right after the chat template's ~25-token system block: each prompt a new entry of the
# engine's prefix cache (16-token blocks), as distinct users' first words are
PROMPTS = ("Ticket {n}: where is my parcel?", "Ticket {n}: can I change the delivery address?",
           "Ticket {n}: my order arrived damaged, what now?", "Ticket {n}: how do I return an item?")
CORRECTION = "Sorry about that! Order {n} is on its way: track it from the link in your e-mail."
METRICS = {"written": "tuneloop_log_records_written_total", "dropped": "tuneloop_log_records_dropped_total",
           "spooled": "tuneloop_log_records_spooled_total", "rejected": "tuneloop_log_records_rejected_total",
           "writer restarts": "tuneloop_log_writer_restarts_total", "engine restarts": "tuneloop_engine_restarts_total"}


def say(line: str) -> None:
    print(line, flush=True)


# ------------------------------------------------------------------ the load


async def chat_worker(ph: Phase, pool: Pool, model: str, i: int, a: argparse.Namespace, stop_at: float) -> None:
    for k in itertools.count():
        if time.monotonic() >= stop_at:
            return
        n, stream = a.prewarm + k * a.concurrency + i, (k + i) % 2 == 1  # the pre-warm's numbers come first
        body = {"model": model, "max_tokens": a.max_tokens,
                "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)].format(n=n)}]}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        t = time.monotonic()
        try:
            status, cid = await asyncio.wait_for(chat(pool, orjson.dumps(body), stream), REQ_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:  # http1's ConnectError and ProtocolError are OSErrors
            status, cid = f"exc:{type(exc).__name__}", None
        ph.done(CHATS[stream], status, time.monotonic() - t, cid)
        if status != "200":
            await asyncio.sleep(0.2)


async def feedback_loop(ph: Phase, pool: Pool, a: argparse.Namespace, stop_at: float) -> None:
    for k in itertools.count(1):
        await asyncio.sleep(1 / a.feedback_rps)
        if time.monotonic() >= stop_at:
            return
        if ph.recent:
            fb = {"completion_id": random.choice(ph.recent), "rating": random.choice((1, -1)), "tags": ["soak"]}
            if k % 3 == 0:
                fb["correction"] = CORRECTION.format(n=k)
            t = time.monotonic()
            ph.done("feedback", await post(pool, b"/v1/feedback", orjson.dumps(fb)), time.monotonic() - t)


async def dataset_loop(ph: Phase, tmp: Path, env: dict, cfg: list[str], a: argparse.Namespace,
                       stop_at: float, pgids: set[int]) -> None:
    (tmp / "datasets").mkdir(exist_ok=True)
    for k in itertools.count(1):
        await asyncio.sleep(min(a.dataset_every_s, stop_at - time.monotonic()))
        if time.monotonic() >= stop_at:
            return
        fmt = ("sft", "dpo")[k % 2 == 0]
        cmd = [PY, "-m", "gateway.cli", "dataset", "build", "--format", fmt, "--no-progress", "--name", f"soak-{k}",
               "--out", str(tmp / f"datasets/{k}.jsonl"), "--since", str(int(ph.wall0)), "--min-rating", "-1", *cfg]
        t = time.monotonic()
        with open(tmp / "dataset.log", "ab") as log:
            p = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=log, env=env, cwd=ROOT,
                                                     start_new_session=True)
        pgids.add(p.pid)
        try:
            status = f"rc={await asyncio.wait_for(p.wait(), BUILD_TIMEOUT_S)}"
        except TimeoutError:
            status = "timeout"
        finally:
            if p.returncode is None:
                os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
            pgids.discard(p.pid)
        ph.done("dataset", "200" if status == "rc=0" else status, time.monotonic() - t)
        ph.builds.append((fmt, status, time.monotonic() - t))


async def prewarm(ph: Phase, pool: Pool, model: str, a: argparse.Namespace) -> None:
    """Fill the engine's prefix cache (LRU, bounded) before the measured run: unique prompts, max_tokens 1,
    at the run's concurrency. Counted apart ("prewarm"); their ids join the log check."""
    todo = iter(range(a.prewarm))

    async def worker() -> None:
        for n in todo:
            body = {"model": model, "max_tokens": 1,
                    "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)].format(n=n)}]}
            try:
                status, cid = await asyncio.wait_for(chat(pool, orjson.dumps(body), False), REQ_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                status, cid = f"exc:{type(exc).__name__}", None
            ph.counts["prewarm", status] += 1
            ph.ids += [cid] if status == "200" and cid else []

    await asyncio.gather(*(worker() for _ in range(a.concurrency)))


async def sampler(ph: Phase, serve_pid: int, mock_pid: int | None, stop_at: float) -> None:
    nxt = ph.t0
    while True:
        sample(ph, serve_pid, mock_pid)
        if time.monotonic() >= stop_at:
            return
        nxt += ph.sample_s
        await asyncio.sleep(max(0.0, min(nxt, stop_at) - time.monotonic()))


async def drive(ph: Phase, port: int, serve_pid: int, mock_pid: int | None, tmp: Path, env: dict,
                cfg: list[str], a: argparse.Namespace, pgids: set[int]) -> None:
    pool, side_pool = Pool("127.0.0.1", port, limit=a.concurrency), Pool("127.0.0.1", port, limit=4)
    if ph.target == "embedded" and a.prewarm > 0:  # samples during it get t < 0
        ph.t0 = pre = time.monotonic()
        samples = asyncio.create_task(sampler(ph, serve_pid, mock_pid, float("inf")))
        try:
            await prewarm(ph, pool, TARGETS[ph.target], a)
        finally:
            samples.cancel()
        shift = time.monotonic() - pre
        ph.rss = {k: [(t - shift, pid, r) for t, pid, r in v] for k, v in ph.rss.items()}
        ph.load = [(t - shift, x) for t, x in ph.load]
        ph.notes.append(f"pre-warm: {a.prewarm} requests (max_tokens 1) in {shift:.0f} s before the run, "
                        f"{ph.counts['prewarm', '200']} answered 200")
    ph.t0, ph.wall0 = time.monotonic(), time.time()
    stop_at = ph.t0 + ph.duration_s
    model = TARGETS[ph.target]
    chats = [asyncio.create_task(chat_worker(ph, pool, model, i, a, stop_at)) for i in range(a.concurrency)]
    side = [asyncio.create_task(c) for c in (feedback_loop(ph, side_pool, a, stop_at),
                                             sampler(ph, serve_pid, mock_pid, stop_at),
                                             dataset_loop(ph, tmp, env, cfg, a, stop_at, pgids))]
    try:
        await asyncio.gather(*chats, *side)
        ex = await asyncio.wait_for(side_pool.request(b"GET", b"/metrics", b"", b""), 30)
        text = (await ex.read()).decode()
        for key, name in METRICS.items():
            vals = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith((name + " ", name + "{"))]
            ph.metrics[key] = sum(vals) if vals else None
    finally:
        for task in (*chats, *side):
            task.cancel()
        await asyncio.gather(*chats, *side, return_exceptions=True)
        pool.close()
        side_pool.close()


# ------------------------------------------------------------------ one target


def run_target(target: str, a: argparse.Namespace) -> Phase:
    tmp = Path(tempfile.mkdtemp(prefix=f"tuneloop-soak-{target}-"))
    home = tmp / "home"
    env = {**os.environ, "TUNELOOP_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    ph, mock, serve, cfg, pgids = Phase(target, a.minutes * 60, a.sample_s), None, None, [], set()
    try:
        if target == "mock":
            mport = loadgen.free_port()
            mock = loadgen.start([PY, str(HERE / "mock_upstream.py"), "--port", str(mport)],
                                 log_path=str(tmp / "mock.log"))
            loadgen.wait_ready(f"http://127.0.0.1:{mport}/health", mock, 30)
            (tmp / "tuneloop.yaml").write_text(
                f"targets:\n  mock: {{kind: vllm, base_urls: [\"http://127.0.0.1:{mport}/v1\"], timeout_s: 30}}\n"
                f"models:\n  {TARGETS['mock']}:\n    routes: [{{target: mock, model: mock-model}}]\n")
            cfg = ["--config", str(tmp / "tuneloop.yaml")]
        port = loadgen.free_port()
        serve = loadgen.start([PY, "-m", "gateway.cli", "serve", *cfg, "--host", "127.0.0.1", "--port", str(port)],
                              env=env, log_path=str(tmp / "serve.log"), cwd=str(ROOT))
        t = time.monotonic()
        loadgen.wait_ready(f"http://127.0.0.1:{port}/health/ready", serve, 300)
        say(f"[{target}] tuneloop serve ready on :{port} after {time.monotonic() - t:.0f} s (tmp {tmp}); "
            f"load for {a.minutes:g} min")
        ph.notes.append(f"gateway ready {time.monotonic() - t:.0f} s after start")
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        runner(drive(ph, port, serve.pid, mock.pid if mock else None, tmp, env, cfg, a, pgids))
        say(f"[{target}] load done: {sum(ph.counts[k, '200'] for k in CHATS)} chat 200s; stopping the gateway")
        stop_serve(serve, ph)
        check_log(ph, home / "tuneloop.db")
        return ph
    finally:
        for pgid in pgids:  # a dataset build cut off by an error or Ctrl-C
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        if serve is not None:
            stop_serve(serve)
        loadgen.stop(mock)
        if a.keep_tmp:
            say(f"[{target}] kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="load per target")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--targets", default="embedded,mock")
    ap.add_argument("--warmup-frac", type=float, default=0.2, help="the first part of the run that is warm-up")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--prewarm", type=int, default=320, help="embedded: requests that fill the engine's prefix "
                    "cache first (8192 positions: 256 of these prompts' 32-position entries)")
    ap.add_argument("--feedback-rps", type=float, default=4.0)
    ap.add_argument("--dataset-every-s", type=float, default=30.0)
    ap.add_argument("--out", default=str(HERE / "results/soak.md"))
    ap.add_argument("--keep-tmp", action="store_true")
    a = ap.parse_args()
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    if bad := [t for t in a.targets if t not in TARGETS]:
        ap.error(f"unknown target(s) {bad}; choose from {','.join(TARGETS)}")
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, also where the shell ignored SIGINT
    phases, rc = [], 0
    try:
        for target in a.targets:
            phases.append(run_target(target, a))
    except KeyboardInterrupt:
        say("[soak] interrupted: everything stopped")
        rc = 130
    except Exception as exc:  # noqa: BLE001 - say it; the processes are gone already
        say(f"[soak] failed: {exc!r}")
        rc = 1
    if phases:
        say(soak_report.write(Path(a.out), phases, a))
    return rc


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
