"""Chaos, measured: errors, latency and lost log records while PostgreSQL, Redis, the embedded
engine, the log writer or the spool's disk fail under a steady mixed load.

One run, loopback only, bounded: a private PostgreSQL cluster and redis-server, the mock upstream
and ``tuneloop serve`` (auth required, Redis rate limits, an embedded engine serving the default
model, the mock as a second target) in a temp dir. A steady asyncio load (mock chat and streams,
engine streams, feedback, a dataset build every ~10 s) runs throughout; each case is a few seconds
steady, the fault for --fault-s, healing, readiness, recovery, then a look in PostgreSQL's
``interactions`` for every completion id the case was answered with. Writes a table per case
(--out) and a plot of errors and latency over time, fault windows shaded (the same name, .png).

    .venv/bin/python loadtests/chaos.py [--fault-s 30] [--cases postgres,redis,engine,writer,disk_full]
                                        [--quick] [--out loadtests/results/chaos.md] [--keep-tmp]

Every process it starts dies with it (also on Ctrl-C or an error), and the tmpfs is unmounted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "loadtests")]
import chaos_faults as cf  # noqa: E402
from chaos_faults import SPOOL_BIG, Case  # noqa: E402

from gateway.config import DEFAULT_MODEL  # noqa: E402

CASES = ("postgres", "redis", "engine", "writer", "disk_full")
# (kind, model, stream, workers): 8 workers with feedback, paced so that 2 cores are not saturated
WORKERS = [("chat", "mock-model", False, 3), ("chat_stream", "mock-model", True, 2),
           ("engine_stream", DEFAULT_MODEL, True, 2)]
KINDS = ("chat", "chat_stream", "engine_stream", "feedback", "dataset")
CHATS = KINDS[:3]
PAUSE_S, ERROR_PAUSE_S, DATASET_EVERY_S = 0.02, 0.2, 10.0
METRICS = {"written": "tuneloop_log_records_written_total", "spooled": "tuneloop_log_records_spooled_total",
           "dropped": "tuneloop_log_records_dropped_total", "rejected": "tuneloop_log_records_rejected_total",
           "writer restarts": "tuneloop_log_writer_restarts_total",
           "engine restarts": "tuneloop_engine_restarts_total"}
say = cf.say


@dataclasses.dataclass(slots=True)
class Req:
    t: float  # start, s since the load began
    kind: str
    status: str = "open"  # "200", "503", "sse_error", "truncated", "exc:ReadTimeout", "rc=0" ...
    lat: float = float("nan")
    id: str | None = None


class Load:
    """The steady mixed load; every request is recorded."""

    def __init__(self, env: cf.Env) -> None:
        self.env = env
        self.reqs: list[Req] = []
        self.ready: list[tuple[float, int]] = []  # (t, /health/ready status; 0: no answer)
        self.ids: collections.deque[str] = collections.deque(maxlen=500)  # recent 200s, for feedback
        self.open: dict[int, Req] = {}  # engine streams in flight (for the engine case)
        self.stopping = False
        self.t0 = time.monotonic()
        self.client = httpx.AsyncClient(base_url=env.root, headers={"authorization": f"Bearer {env.key}"},
                                        timeout=httpx.Timeout(30, connect=5), limits=httpx.Limits(max_connections=32))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> list[asyncio.Task]:
        loops = [self.chat_loop(k, m, s) for k, m, s, n in WORKERS for _ in range(n)]
        return [asyncio.create_task(c) for c in [*loops, self.feedback_loop(), self.dataset_loop(), self.ready_loop()]]

    async def stop(self, tasks: list[asyncio.Task]) -> None:
        self.stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    async def chat_loop(self, kind: str, model: str, stream: bool) -> None:
        body = {"model": model, "stream": stream, "max_tokens": 16,
                "messages": [{"role": "user", "content": "Where is my parcel? Order 12345."}]}
        while not self.stopping:
            if stream:
                r = await self.stream(kind, body)
            else:
                r = await self.call(kind, self.client.post("/v1/chat/completions", json=body))
            if r.status == "200" and r.id:
                self.ids.append(r.id)
            await asyncio.sleep(PAUSE_S if r.status == "200" else ERROR_PAUSE_S)

    async def call(self, kind: str, request: Awaitable[httpx.Response]) -> Req:
        r = Req(self.now(), kind)
        self.reqs.append(r)
        try:
            resp = await request
            r.status, r.id = str(resp.status_code), resp.headers.get("x-request-id")
        except httpx.HTTPError as exc:
            r.status = f"exc:{type(exc).__name__}"
        r.lat = self.now() - r.t
        return r

    async def stream(self, kind: str, body: dict) -> Req:
        """A streamed chat: "200" only with [DONE]; "sse_error" for an error event, "truncated" for neither."""
        r = Req(self.now(), kind)
        self.reqs.append(r)
        if kind == "engine_stream":
            self.open[id(r)] = r
        status = "open"  # until the stream ends
        try:
            async with self.client.stream("POST", "/v1/chat/completions", json=body) as resp:
                r.id = resp.headers.get("x-request-id")
                status = "truncated" if resp.status_code == 200 else str(resp.status_code)
                async for line in resp.aiter_lines():
                    if line == "data: [DONE]" or line.startswith('data: {"error"'):
                        status = "200" if line.endswith("[DONE]") else "sse_error"
        except httpx.HTTPError as exc:
            status = f"exc:{type(exc).__name__}"
        finally:
            r.status, r.lat = status, self.now() - r.t
            self.open.pop(id(r), None)
        return r

    async def feedback_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.25)
            if self.ids:
                await self.call("feedback", self.client.post("/v1/feedback", timeout=15, json={
                    "completion_id": random.choice(self.ids), "rating": 1, "tags": ["chaos"]}))

    async def dataset_loop(self) -> None:
        """``tuneloop dataset build`` every ~10 s over the last two minutes of the log; its exit code."""
        (self.env.tmp / "datasets").mkdir(exist_ok=True)
        n = 0
        while not self.stopping:
            await asyncio.sleep(DATASET_EVERY_S)
            n += 1
            r = Req(self.now(), "dataset")
            self.reqs.append(r)
            cmd = [*self.env.tuneloop, "dataset", "build", "--out", str(self.env.tmp / f"datasets/{n}.jsonl"),
                   "--no-progress", "--since", str(int(time.time() - 120)), "--name", f"chaos-{n}",
                   "--config", str(self.env.cfg)]
            with open(self.env.tmp / "dataset.log", "ab") as log:
                p = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=log, env=self.env.env,
                                                         start_new_session=True)
            try:
                r.status = f"rc={await asyncio.wait_for(p.wait(), 90)}"
            except (TimeoutError, asyncio.CancelledError):
                os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
                r.status = "timeout"
                if self.stopping:
                    raise
            r.lat = self.now() - r.t

    async def ready_loop(self) -> None:
        while not self.stopping:
            try:
                code = (await self.client.get("/health/ready", timeout=3)).status_code
            except httpx.HTTPError:
                code = 0
            self.ready.append((self.now(), code))
            await asyncio.sleep(1)

    async def metrics(self) -> str | None:
        try:
            return (await self.client.get("/metrics", timeout=10)).text
        except httpx.HTTPError:
            return None

    def window(self, a: float, b: float, kinds: tuple[str, ...] = KINDS) -> list[Req]:
        """The finished requests of these kinds that started in [a, b)."""
        return [r for r in self.reqs if a <= r.t < b and r.kind in kinds and r.status != "open"]


async def run_case(env: cf.Env, load: Load, name: str, a: argparse.Namespace) -> Case:
    c = Case(name)
    if name == "disk_full" and env.tmpfs_error:
        c.skipped = f"no tmpfs on the spool ({env.tmpfs_error})"
        say(f"[{name}] skipped: {c.skipped}")
        return c
    c.start = load.now()
    say(f"[{name}] steady {a.steady_s:g} s")
    await asyncio.sleep(a.steady_s)
    c.m_before = await load.metrics()
    c.fault_start = load.now()
    await cf.inject(env, load, c)
    say(f"[{name}] fault for {a.fault_s:g} s: {'; '.join(c.notes)}")
    await asyncio.sleep(a.fault_s)
    n = len(c.notes)
    await cf.heal(env, load, c)
    c.fault_end = load.now()
    say(f"[{name}] healed: {'; '.join(c.notes[n:])}")
    try:
        c.ready_after = await asyncio.to_thread(cf.wait_ready, env.root, env.serve, 300)
    except RuntimeError as exc:
        c.notes.append(f"not ready again: {exc}")
    say(f"[{name}] ready {c.ready_after or float('nan'):.1f} s after healing; recovery {a.recover_s:g} s")
    await asyncio.sleep(a.recover_s)
    c.end = load.now()
    for _ in range(80):  # up to 40 s for the case's requests still out (a stream times out after 30 s)
        if not any(r.status == "open" and c.start <= r.t < c.end for r in load.reqs):
            break
        await asyncio.sleep(0.5)
    c.checked = {r.id for r in [*load.window(c.start, c.end, CHATS), *c.open_at_kill] if r.id}
    c.found = await asyncio.to_thread(cf.check_log, env.pg.url, list(c.checked), a.quick)
    c.m_after = await load.metrics()
    say(f"[{name}] done: {summary_row(c, load)}")
    return c


async def drive(env: cf.Env, load: Load, a: argparse.Namespace, cases: list[Case]) -> None:
    tasks = load.start()
    try:
        await asyncio.sleep(a.warmup_s)
        for name in a.cases:
            cases.append(await run_case(env, load, name, a))
    finally:
        await load.stop(tasks)


# ------------------------------------------------------------------ the report


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def ms(s: float) -> str:
    return "—" if s != s else f"{s * 1000:,.1f}" if s < 0.1 else f"{s * 1000:,.0f}"


def ok(r: Req) -> bool:
    return r.status in ("200", "rc=0")


def delta(c: Case, key: str) -> str:
    after = cf.metric(c.m_after, METRICS[key])
    return "absent" if after is None else f"+{after - (cf.metric(c.m_before, METRICS[key]) or 0):g}"


def logged(c: Case, reqs: list[Req], with_error: bool = False) -> int:
    """How many of ``reqs`` the log holds (with its ``error`` set)."""
    return sum(r.id in c.found and (not with_error or c.found[r.id][1]) for r in reqs)


def summary_row(c: Case, load: Load) -> str:
    if c.skipped:
        return f"| {c.name} | skipped: {c.skipped} |" + " |" * 7
    rs = load.window(c.start, c.end, KINDS[:4])
    good = [r for r in load.window(c.start, c.end, CHATS) if r.id in c.checked and r.status == "200"]
    fault = [r.lat for r in load.window(c.fault_start, c.fault_end, ("chat", "chat_stream"))]
    return (f"| {c.name} | {len(rs)} | {sum(not r.status.startswith('exc:') for r in rs)} | "
            f"{sum(not ok(r) for r in rs)} | {logged(c, good)}/{len(good)} | {len(good) - logged(c, good)} | "
            f"{delta(c, 'dropped')} | {ms(pct(fault, 50))} / {ms(pct(fault, 99))} | {c.ready_after or -1:.1f} |")


def kind_table(c: Case, load: Load) -> list[str]:
    out = ["| kind | requests | ok | not ok, by status | p50 ms | p99 ms | fault p50 ms | fault p99 ms |",
           "|---|---:|---:|---|---:|---:|---:|---:|"]
    for k in KINDS:
        if rs := load.window(c.start, c.end, (k,)):
            lat, fl = [r.lat for r in rs], [r.lat for r in rs if c.fault_start <= r.t < c.fault_end]
            errs = collections.Counter(r.status for r in rs if not ok(r)).most_common()
            out.append(f"| {k} | {len(rs)} | {sum(map(ok, rs))} | {', '.join(f'{s}: {n}' for s, n in errs) or '—'} "
                       f"| {ms(pct(lat, 50))} | {ms(pct(lat, 99))} | {ms(pct(fl, 50))} | {ms(pct(fl, 99))} |")
    return out


def facts(c: Case, load: Load) -> list[str]:
    ch = [r for r in load.window(c.start, c.end, CHATS) if r.id in c.checked]
    good, bad = [r for r in ch if r.status == "200"], [r for r in ch if r.status != "200"]
    cut = [r for r in bad if r.status in ("sse_error", "truncated")]
    lost = [r.id for r in ch if r.id not in c.found]
    out = [f"- {n}" for n in c.notes] + [
        f"- log: {logged(c, ch)} of {len(ch)} completion ids found in `interactions` (200s: {logged(c, good)} of "
        f"{len(good)}; not ok with an id: {logged(c, bad)} of {len(bad)}, {logged(c, bad, True)} with `error` set); "
        f"lost = expected − found = {len(lost)}" + (f", e.g. {lost[:3]}" if lost else ""),
        "- metrics Δ: " + ", ".join(f"{k} {delta(c, k)}" for k in METRICS)]
    if cut:
        out.append(f"- streams cut short: {dict(collections.Counter(r.status for r in cut))}; in the log with "
                   f"`error` set: {logged(c, cut, True)} of {len(cut)}")
    if down := [t for t, s in load.ready if c.start <= t < c.end and s != 200]:
        out.append(f"- /health/ready not 200 at {len(down)} of the 1 s probes, t = {min(down):.0f}–{max(down):.0f} s")
    if c.name == "writer":
        name = METRICS["writer restarts"]
        lines = [ln for ln in (c.m_after or "").splitlines() if ln.startswith(name + "{")]
        out.append(f"- `{name}` after: {lines or 'no sample (a labelled counter has none before its first +1)'}")
    if c.name == "engine" and c.kill_t is not None:
        nxt = [r.t + r.lat for r in load.reqs if r.kind == "engine_stream" and r.t >= c.kill_t and r.status == "200"]
        back = f"{min(nxt) - c.kill_t:.1f} s" if nxt else "never"
        out.append(f"- streams open at the kill: {dict(collections.Counter(r.status for r in c.open_at_kill))}, in "
                   f"the log with `error` set: {logged(c, c.open_at_kill, True)} of {len(c.open_at_kill)}; the next "
                   f"successful engine request ended {back} after the kill")
    if c.name == "disk_full":
        d = delta(c, "dropped")
        agree = d == f"+{len(lost)}"
        out.append(f"- disk full: lost {len(lost)} of {len(ch)} records; dropped metric Δ {d} "
                   f"({'agree' if agree else 'DISAGREE'})")
    return out


def plot(path: Path, cases: list[Case], load: Load) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in load.reqs if r.status != "open"]
    end = int(load.now()) + 1
    fig, (ax_e, ax_l) = plt.subplots(2, 1, figsize=(13, 7), sharex=True)
    for kind in KINDS[:4]:
        errs = collections.Counter(int(r.t + r.lat) for r in done if r.kind == kind and not ok(r))
        ax_e.plot(range(end), [errs[s] for s in range(end)], label=kind, lw=1)
    bins = collections.defaultdict(list)
    for r in done:
        if r.kind in ("chat", "chat_stream"):
            bins[int(r.t)].append(r.lat * 1000)
    xs = sorted(bins)
    for q, style in ((50, "-"), (99, ":")):
        ax_l.plot(xs, [pct(bins[x], q) for x in xs], style, color="tab:blue", lw=1, label=f"mock chat p{q} (per s)")
    for good, color in ((True, "tab:green"), (False, "tab:red")):
        eng = [r for r in done if r.kind == "engine_stream" and ok(r) == good]
        ax_l.scatter([r.t for r in eng], [r.lat * 1000 for r in eng], s=9, color=color,
                     label=f"engine stream {'ok' if good else 'not ok'}")
    for c in cases:
        for ax in (ax_e, ax_l):
            ax.axvspan(c.fault_start, c.fault_end, color="tab:red", alpha=0.12)
        ax_e.text(c.fault_start, 1.01, c.name, transform=ax_e.get_xaxis_transform(), fontsize=9)
    ax_e.set_ylabel("errors / s (by end time)")
    ax_l.set_ylabel("latency ms (by start time)")
    ax_l.set_yscale("log")
    ax_l.set_xlabel("time since the load started (s); shaded: fault windows")
    for ax in (ax_e, ax_l):
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(out: Path, cases: list[Case], load: Load, a: argparse.Namespace) -> str:
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    commit = git.stdout.strip()
    md = [f"# Chaos (loadtests/chaos.py{' --quick' if a.quick else ''}, fault {a.fault_s:g} s, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, commit {commit or '?'}, load {os.getloadavg()[0]:.1f})", "",
          f"Load: {', '.join(f'{n}× {k}' for k, _, _, n in WORKERS)}, 1× feedback every 0.25 s, a dataset build "
          f"every {DATASET_EVERY_S:g} s; {DEFAULT_MODEL} on the embedded engine (CPU). Latencies are of every "
          "finished request (errors included); a case holds the requests that started in it.", "",
          "| case | requests | answered | not ok | 200s logged | lost 200s | dropped Δ | chat p50 / p99 ms in fault "
          "| ready after heal s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    md += [summary_row(c, load) for c in cases]
    for c in cases:
        md += ["", f"## {c.name}", ""]
        if c.skipped:
            md.append(f"Skipped: {c.skipped}.")
            continue
        md += [f"t = {c.start:.0f} s, fault {c.fault_start:.0f}–{c.fault_end:.0f} s, end {c.end:.0f} s", "",
               *kind_table(c, load), "", *facts(c, load)]
    md += ["", f"![errors and latency over time]({out.with_suffix('.png').name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    plot(out.with_suffix(".png"), [c for c in cases if not c.skipped], load)
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fault-s", type=float, default=None, help="seconds each fault lasts (30; --quick: 8)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--quick", action="store_true", help="fault 8 s and short phases: a smoke run")
    ap.add_argument("--out", default=str(ROOT / "loadtests/results/chaos.md"))
    ap.add_argument("--keep-tmp", action="store_true")
    a = ap.parse_args()
    a.cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    if bad := [c for c in a.cases if c not in CASES]:
        ap.error(f"unknown case(s) {bad}; choose from {','.join(CASES)}")
    a.fault_s = a.fault_s if a.fault_s is not None else 8.0 if a.quick else 30.0
    a.steady_s, a.recover_s, a.warmup_s = (3, 5, 3) if a.quick else (5, 15, 5)
    signal.signal(signal.SIGTERM, on_sigterm)
    env = cf.Env(ROOT, DEFAULT_MODEL, a.keep_tmp, SPOOL_BIG if "disk_full" in a.cases else None)
    cases: list[Case] = []
    load, rc = None, 0
    try:
        env.setup()
        load = Load(env)
        asyncio.run(drive(env, load, a, cases))
    except KeyboardInterrupt:
        say("[chaos] interrupted: stopping everything")
        rc = 130
    except Exception as exc:  # noqa: BLE001 - say it, clean up, exit non-zero
        say(f"[chaos] failed: {exc!r}")
        rc = 1
    finally:
        if load is not None:  # every request, for a look afterwards (--keep-tmp)
            with open(env.tmp / "requests.jsonl", "w") as f:
                f.writelines(json.dumps(dataclasses.astuple(r)) + "\n" for r in load.reqs)
        env.cleanup()
    if load is not None and cases:
        say(write(Path(a.out), cases, load, a))
    return rc


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
