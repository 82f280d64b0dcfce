"""The embedded engine's supervisor: ``tuneloop serve`` restarts an engine child that exits on its own.

The engine exits non-zero when its scheduler thread dies (``adapters/engine/server.py``), and may be
killed from outside (OOM killer, a signal).  Each such exit is logged, counted in
``tuneloop_engine_restarts_total{target}`` and followed by a restart after an exponential backoff (1 s,
doubling to 30 s; back to 1 s once a child has stayed up for a minute).  Meanwhile the engine's
``/health`` does not answer, so the gateway's ``/health/ready`` is 503 (the vllm provider's readiness).

A supervisor looks like a ``subprocess.Popen`` to its owner (``terminate``, ``wait``, ``kill``, ``poll``):
terminating it stops the supervision first, so a deliberate stop is never restarted.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time

from gateway.metrics import ENGINE_RESTARTS

log = logging.getLogger("tuneloop.serve")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0


class EngineSupervisor:
    def __init__(self, target: str, cmd: list[str], env: dict[str, str], sock: socket.socket) -> None:
        self.target, self.cmd, self.env = target, cmd, env
        self.sock = sock  # the listening socket every child in turn serves (``gateway/embedded.py``)
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, name=f"engine-supervisor-{target}", daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen:
        self._started = time.monotonic()
        return subprocess.Popen(self.cmd, env=self.env, pass_fds=(self.sock.fileno(),))

    def _watch(self) -> None:
        delay = FIRST_BACKOFF_S
        while True:
            proc = self._proc
            code = proc.wait()
            if self._stopping.is_set():
                return
            up = time.monotonic() - self._started
            if up >= STABLE_S:
                delay = FIRST_BACKOFF_S
            log.error("the embedded engine for target %r exited with status %s after %.0f s; restarting it in "
                      "%.0f s", self.target, code, up, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = self._spawn()
                self.restarts += 1
            ENGINE_RESTARTS.labels(self.target).inc()
            log.warning("restarted the embedded engine for target %r (restart %d)", self.target, self.restarts)
            delay = min(delay * 2, MAX_BACKOFF_S)

    # -- the Popen-like surface ----------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def terminate(self) -> None:
        with self._lock:
            self._stopping.set()
            self._proc.terminate()

    def kill(self) -> None:
        with self._lock:
            self._stopping.set()
            self._proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        code = self._proc.wait(timeout=timeout)
        self.sock.close()
        return code
