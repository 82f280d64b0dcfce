"""The relay's plumbing: one writer child and its pipes, barriers, and the batch encoding."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

import gateway
from gateway.log import metrics

log = logging.getLogger("gateway.log.relay")

_ROOT = str(Path(gateway.__file__).resolve().parents[1])


# a read-your-writes barrier: the waiting loop and the future it awaits
Barrier = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def release(barriers: list[Barrier]) -> None:
    for loop, fut in barriers:
        try:
            loop.call_soon_threadsafe(_set_done, fut)
        except RuntimeError:
            pass  # that loop is closed; nobody waits any more


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Proc:
    """One writer child and our ends of its two pipes."""

    def __init__(self, args: list[str]) -> None:
        c_rx, p_tx = os.pipe()
        p_rx, c_tx = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gateway.log.child", *args, str(c_rx), str(c_tx)],
            pass_fds=(c_rx, c_tx), env=env, stdin=subprocess.DEVNULL)
        os.close(c_rx)
        os.close(c_tx)
        self.tx = Connection(p_tx, readable=False)
        self.rx = Connection(p_rx, writable=False)
        self.closed = False  # it said "closed": a clean exit
        self.hello = False  # it said "hello": started
        self.hung = False  # the watchdog killed it

    def end(self) -> int:
        for conn in (self.tx, self.rx):
            try:
                conn.close()
            except OSError:
                pass
        try:
            return self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def encode(batch: list[Any]) -> bytes:
    """A JSON array of the records; one that cannot be encoded is logged and counted lost."""
    try:
        return orjson.dumps(batch, default=str)
    except TypeError:
        parts = []
        for record in batch:
            try:
                parts.append(orjson.dumps(record, default=str))
            except TypeError:
                metrics.DROPPED.inc()
                log.exception("interaction record %s cannot be encoded; lost",
                              getattr(record, "id", "?"))
        return b"[" + b",".join(parts) + b"]"
