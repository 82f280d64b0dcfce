"""``tuneloop serve`` supervises its embedded engine: killed, it comes back (readiness false, then true);
a stream open when it dies ends with an error event, and is logged with its error."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from gateway.config import DEFAULT_MODEL
from tests.fixtures.gateway import GatewayProcess, free_port

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "What is the capital of France?"}]


def engine_child(parent: int) -> int:
    """The pid of ``parent``'s child running the engine."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"engine" in cmdline:
            return int(proc.name)
    raise AssertionError("no engine child found")


def ready(gw: GatewayProcess) -> int:
    try:
        return httpx.get(f"{gw.root}/health/ready", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def wait_for(check, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def stream_killed_midway(gw: GatewayProcess, engine: int) -> tuple[str, list[dict]]:
    """Open a long stream, kill the engine after its first content, read to the end: (id, events)."""
    body = {"model": DEFAULT_MODEL, "messages": MSG, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    events: list[dict] = []
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            events.append(orjson.loads(line[6:]))
            if len(events) == 3:
                os.kill(engine, signal.SIGKILL)
    return events[0]["id"], events


def logged(home: Path, completion_id: str) -> tuple[int, dict]:
    engine = sa.create_engine(f"sqlite:///{home / 'tuneloop.db'}")
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, error FROM interactions WHERE id = :id"),
                           {"id": completion_id}).one()
    engine.dispose()
    return row[0], orjson.loads(row[1]) if isinstance(row[1], str) else row[1]


def test_a_killed_engine_is_restarted(tmp_path):
    gw = GatewayProcess(None, tmp_path, args=["--engine-port", str(free_port())])
    try:
        gw.wait_ready()
        first = engine_child(gw.proc.pid)
        started = time.monotonic()
        completion_id, events = stream_killed_midway(gw, first)  # ends by itself: nothing hangs
        assert time.monotonic() - started < 30
        assert "error" in events[-1] and all("choices" in e for e in events[:-1]), events[-3:]
        assert events[-1]["error"]["type"]  # OpenAI's envelope, in-band
        wait_for(lambda: ready(gw) == 503)  # the engine is down: not ready
        wait_for(lambda: ready(gw) == 200)  # restarted
        assert engine_child(gw.proc.pid) != first
        reply = gw.client().chat.completions.create(model=DEFAULT_MODEL, messages=MSG, max_tokens=5, temperature=0)
        assert reply.choices[0].message.content
        metrics = httpx.get(f"{gw.root}/metrics").text
        assert re.search(r'^tuneloop_engine_restarts_total\{target="[^"]+"\} 1\.0$', metrics, re.M), metrics[-2000:]
        status, error = logged(tmp_path, completion_id)  # the broken stream is in the log, with its error
        assert status >= 500 and error and error.get("message"), (status, error)
    finally:
        assert gw.stop() == 0
    assert "restarting it in" in gw.log_path.read_text()
