"""Pieces of ``soak.py``: the run's record (``Phase``), one chat completion or POST through the
gateway's own HTTP/1.1 pool and SSE parser, the RSS (VmRSS, through psutil) of every process of the
gateway's tree and of the mock, each named by its role, a clean stop of ``tuneloop serve``, and the
answered completion ids looked up in ``interactions`` of the gateway's SQLite database.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil

from gateway.providers.http1 import Pool
from gateway.sse import SSEParser

STOP_GRACE_S = 90.0  # SIGTERM: drain (30 s by default), flush the log, stop the children (15 s each)
HEADERS = b"content-type: application/json\r\n"
CHATS = ("plain", "stream")


@dataclasses.dataclass
class Phase:
    """One target's run: what was sent and answered, the samples, the log's answer."""

    target: str
    duration_s: float
    sample_s: float
    t0: float = 0.0  # monotonic, when the load started
    wall0: float = 0.0
    ids: list[str] = dataclasses.field(default_factory=list)  # the completion ids of every chat 200
    recent: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=1000))
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # (kind, status)
    lat: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(list))  # kind -> ok s
    intervals: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(collections.Counter))
    rss: dict = dataclasses.field(default_factory=dict)  # role -> [(t, pid, bytes)]
    load: list = dataclasses.field(default_factory=list)  # (t, the machine's 1-min load average)
    builds: list = dataclasses.field(default_factory=list)  # (format, status, seconds)
    metrics: dict = dataclasses.field(default_factory=dict)
    log: dict = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def done(self, kind: str, status: str, seconds: float, cid: str | None = None) -> None:
        self.counts[kind, status] += 1
        last = max(0, math.ceil(self.duration_s / self.sample_s) - 1)  # a request ending after the run: the last
        self.intervals[min(last, int((time.monotonic() - self.t0) // self.sample_s))][
            (kind if kind in CHATS else "side") + "_ok" if status == "200" else "errors"] += 1
        if status == "200":
            self.lat[kind].append(seconds)
            if cid and kind in CHATS:
                self.ids.append(cid)
                self.recent.append(cid)


async def chat(pool: Pool, body: bytes, stream: bool) -> tuple[str, str | None]:
    ex = await pool.request(b"POST", b"/v1/chat/completions", body, HEADERS)
    cid = ex.header("x-request-id")
    if ex.status != 200 or not stream:
        data = await ex.read()
        ok = ex.status == 200 and data[:1] == b"{" and b'"choices"' in data
        return ("200" if ok else str(ex.status) if ex.status != 200 else "bad_body"), cid
    parser, error = SSEParser(), False
    async for piece in ex.iter_body():  # to the end, so that the connection is reused
        error = error or any(e.startswith(b'{"error"') for e in parser.feed(piece))
    return ("sse_error" if error else "200" if parser.done else "truncated"), cid


async def post(pool: Pool, path: bytes, body: bytes) -> str:
    async def go() -> str:
        ex = await pool.request(b"POST", path, body, HEADERS)
        await ex.read()
        return str(ex.status)
    try:
        return await asyncio.wait_for(go(), 30)
    except (OSError, TimeoutError) as exc:
        return f"exc:{type(exc).__name__}"


def role(p: psutil.Process, serve_pid: int) -> str:
    if p.pid == serve_pid:
        return "gateway"
    argv = p.cmdline()
    for marker, name in (("gateway.log.child", "log writer"), ("adapters.training.runner", "training runner"),
                         ("engine", "engine")):
        if marker in argv:
            return name
    return f"other: {p.name()} {p.pid}"


def sample(ph: Phase, serve_pid: int, mock_pid: int | None) -> None:
    t = time.monotonic() - ph.t0
    ph.load.append((t, os.getloadavg()[0]))
    found: list[tuple[str, psutil.Process]] = []
    try:
        root = psutil.Process(serve_pid)
        found = [(role(p, serve_pid), p) for p in [root, *root.children(recursive=True)]]
    except psutil.Error:
        pass
    if mock_pid is not None:
        found.append(("mock upstream", psutil.Process(mock_pid)))
    for name, p in found:
        try:
            ph.rss.setdefault(name, []).append((t, p.pid, p.memory_info().rss))  # rss = VmRSS
        except psutil.Error:
            continue


def stop_serve(p: subprocess.Popen, ph: Phase | None = None) -> None:
    """SIGTERM the gateway (it drains, flushes the log, stops its children), then SIGKILL its group."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            if ph:
                ph.notes.append(f"gateway still up {STOP_GRACE_S:g} s after SIGTERM: killed")
    try:
        os.killpg(p.pid, signal.SIGKILL)
        if ph and p.returncode is not None:
            ph.notes.append("processes of the gateway's group were left after it exited: killed")
    except ProcessLookupError:
        pass
    p.wait(10)
    if ph:
        ph.notes.append(f"`tuneloop serve` exit code after SIGTERM: {p.returncode}")


def check_log(ph: Phase, db: Path) -> None:
    """Every chat 200's completion id looked up in ``interactions`` (the gateway is stopped)."""
    con = sqlite3.connect(db)
    try:
        con.execute("CREATE TEMP TABLE want (id TEXT PRIMARY KEY)")
        con.executemany("INSERT OR IGNORE INTO want VALUES (?)", ((i,) for i in ph.ids))
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        ph.log = {"answered": len(ph.ids), "unique": q("SELECT count(*) FROM want")[0][0],
                  "found": q("SELECT count(*) FROM want JOIN interactions USING (id)")[0][0],
                  "missing": [r[0] for r in q("SELECT id FROM want WHERE id NOT IN "
                                                "(SELECT id FROM interactions) LIMIT 5")],
                  "by_status": dict(q("SELECT status, count(*) FROM interactions GROUP BY status")),
                  "feedback rows": q("SELECT count(*) FROM feedback")[0][0],
                  "datasets rows": q("SELECT count(*) FROM datasets")[0][0],
                  "db MiB": sum(f.stat().st_size for f in db.parent.glob(db.name + "*")) / 2**20}
    finally:
        con.close()
