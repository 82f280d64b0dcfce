"""``tuneloop serve`` supervises its embedded engine: killed, it comes back (readiness false, then true)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

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


def test_a_killed_engine_is_restarted(tmp_path):
    gw = GatewayProcess(None, tmp_path, args=["--engine-port", str(free_port())])
    try:
        gw.wait_ready()
        first = engine_child(gw.proc.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: ready(gw) == 503)  # the engine is down: not ready
        wait_for(lambda: ready(gw) == 200)  # restarted
        assert engine_child(gw.proc.pid) != first
        reply = gw.client().chat.completions.create(model=DEFAULT_MODEL, messages=MSG, max_tokens=5, temperature=0)
        assert reply.choices[0].message.content
        metrics = httpx.get(f"{gw.root}/metrics").text
        assert re.search(r'^tuneloop_engine_restarts_total\{target="[^"]+"\} 1\.0$', metrics, re.M), metrics[-2000:]
    finally:
        assert gw.stop() == 0
    assert "restarting it in" in gw.log_path.read_text()
