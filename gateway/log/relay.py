"""The gateway's side of the log writer: an in-memory buffer relayed to a child process.

``submit`` only appends to a deque (O(1), never raises, never blocks). A feeder thread
wakes on the first record (then gathers for ``FLUSH_S`` or ``FLUSH_RECORDS``), encodes
batches with orjson and writes them to the writer child (child.py), which does every
insert, fsync and replay on its own CPU and GIL. A reader thread takes the child's
acknowledgements (by batch sequence number), applies its metrics and releases sync
barriers.

No record is lost: a batch stays in ``_unacked`` until the child says it is committed
or spooled. If the child dies, the reader thread appends every unacknowledged batch to
the spool (fsynced), starts a new child (which replays the spool first) and sends it
the pending barriers again. On close, what the child did not acknowledge is spooled
here. A full buffer spills to the spool, as before.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

import gateway
from gateway.log import metrics
from gateway.log.spool import Spool

log = logging.getLogger(__name__)

FLUSH_S = 0.004  # how long the feeder gathers records before a write to the child
FLUSH_RECORDS = 512  # ... unless this many are waiting
START_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 120.0  # the child may be replaying a spool or spooling a backlog
_ROOT = str(Path(gateway.__file__).resolve().parents[1])


# a read-your-writes barrier: the waiting loop and the future it awaits
Barrier = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _release(barriers: list[Barrier]) -> None:
    for loop, fut in barriers:
        try:
            loop.call_soon_threadsafe(_set_done, fut)
        except RuntimeError:
            pass  # that loop is closed; nobody waits any more


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Proc:
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


class Relay:
    def __init__(self, database_url: str, home: Path, spool: Spool, *, queue_size: int,
                 batch_size: int, probe_interval: float, db_up: bool) -> None:
        self.spool = spool
        self.spool.records = 0  # files already there are the child's to count and replay
        self.queue_size, self.batch_size = queue_size, batch_size
        self._args = [database_url, str(home), str(batch_size), str(probe_interval)]
        self._queue: collections.deque[Any] = collections.deque()
        self._wake, self._full = threading.Event(), threading.Event()
        self._lock = threading.Lock()  # writes to the child's pipe, and its restarts
        self._unacked: dict[int, list[Any]] = {}
        self._seq = itertools.count(1)
        self._bid = itertools.count(1)
        self._barriers: dict[int, Barrier] = {}
        self._unsent: list[int] = []  # barrier ids the feeder has not sent yet
        self._status: dict[str, Any] = {"db_up": db_up, "spool": 0}
        self._hello = threading.Event()  # the first child is up
        self._stopping = self._stopped = False
        self.restarts = 0
        self._proc = self._spawn()
        self._feeder = threading.Thread(target=self._feed, name="tuneloop-log-feeder", daemon=True)
        self._reader = threading.Thread(target=self._read, name="tuneloop-log-acks", daemon=True)
        metrics.register(self)

    # ---- any thread ----
    def start(self) -> None:
        self._feeder.start()
        self._reader.start()
        if not self._hello.wait(START_TIMEOUT_S):
            raise RuntimeError("the log writer child did not start")

    def submit(self, record: Any) -> None:
        try:
            q = self._queue
            if self._stopped or len(q) >= self.queue_size:
                self._spill(record)  # full (or closed): to disk, never dropped
                return
            q.append(record)
            n = len(q)
            if n == 1:
                self._wake.set()
            elif n == FLUSH_RECORDS:
                self._full.set()
        except Exception:  # the request path must never see a logging failure
            log.exception("log submit failed")
            self._spill(record)

    def _spill(self, record: Any) -> None:
        try:
            self.spool.append([record])
            metrics.SPOOLED.inc()
            if self._stopped:
                self.spool.rotate()  # fsynced and unlocked: the next child replays it
            self._wake.set()  # the feeder hands the file over to the child
        except Exception:
            metrics.DROPPED.inc()
            log.exception("interaction record %s lost: spool unwritable",
                          getattr(record, "id", "?"))

    def add_barrier(self, barrier: Barrier) -> None:
        bid = next(self._bid)
        self._barriers[bid] = barrier
        self._unsent.append(bid)
        self._wake.set()
        self._full.set()

    @property
    def db_up(self) -> bool:
        return bool(self._status["db_up"])

    @property
    def pid(self) -> int:
        return self._proc.popen.pid

    def queue_depth(self) -> int:
        return len(self._queue) + sum(len(b) for b in list(self._unacked.values()))

    def spool_records(self) -> int:
        return int(self._status["spool"]) + self.spool.records

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._full.set()

    def join(self) -> None:
        """After ``stop``: wait for the child to flush and exit; spool what it did not take."""
        self._feeder.join()
        self._reader.join(CLOSE_TIMEOUT_S)
        with self._lock:
            self._stopped = True
            if self._reader.is_alive():
                log.error("log writer child did not close in %.0fs; spooling", CLOSE_TIMEOUT_S)
                self._proc.popen.kill()
            self._proc.end()
            self._spool_unacked()
            leftover = list(self._queue)
            self._queue.clear()
            if leftover:
                self.spool.append(leftover)
                metrics.SPOOLED.inc(len(leftover))
            self.spool.close()
            barriers, self._barriers = list(self._barriers.values()), {}
        _release(barriers)

    # ---- the feeder thread ----
    def _feed(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self._stopping:
                self._full.wait(FLUSH_S)  # gather a few ms of records into one write
            self._full.clear()
            stopping = self._stopping
            try:
                self._flush()
            except Exception:
                log.exception("log feeder pass failed")
            if stopping:
                self._send(["c"])
                return

    def _flush(self) -> None:
        bids, self._unsent = self._unsent, []  # before draining: barriers follow their records
        if self.spool.records or bids:
            self.spool.rotate()  # spilled records: hand the file over to the child
        q = self._queue
        while q:
            batch = [q.popleft() for _ in range(min(len(q), self.batch_size))]
            payload = _encode(batch)
            with self._lock:
                seq = next(self._seq)
                self._unacked[seq] = batch
                self._send_locked(b'["b",%d,%s]' % (seq, payload))
        if bids:
            self._send(["s", bids])

    def _send(self, msg: list[Any]) -> None:
        with self._lock:
            self._send_locked(orjson.dumps(msg))

    def _send_locked(self, data: bytes) -> None:
        try:
            self._proc.tx.send_bytes(data)
        except OSError:
            pass  # the child is gone: the reader thread spools what it did not acknowledge

    # ---- the reader thread ----
    def _read(self) -> None:
        while True:
            proc = self._proc
            try:
                msg = orjson.loads(proc.rx.recv_bytes())
            except (EOFError, OSError):
                if proc.closed or not self._recover(proc):
                    return
                continue
            self._handle(proc, msg)

    def _handle(self, proc: _Proc, msg: list[Any]) -> None:
        status = msg[-1]
        metrics.apply(status)
        self._status = {"db_up": status["db_up"], "spool": status["spool"]}
        if msg[0] == "hello":
            self.spool.records = 0  # the child counted every file on disk, ours too
            self._hello.set()
        elif msg[0] == "ack":
            for seq in msg[1]:
                self._unacked.pop(seq, None)
            _release([b for b in map(self._barriers.pop, msg[2], itertools.repeat(None)) if b])
        elif msg[0] == "closed":
            proc.closed = True

    def _recover(self, proc: _Proc) -> bool:
        """The child died: spool what it did not acknowledge, start another (unless closing)."""
        with self._lock:
            rc = proc.end()
            log.error("log writer child %d exited (%s); %d batches unacknowledged",
                      proc.popen.pid, rc, len(self._unacked))
            self._spool_unacked()
            if self._stopping:
                return False
            while True:
                time.sleep(min(1.0, 0.1 * self.restarts))  # one that cannot start: no busy loop
                self.restarts += 1
                try:
                    self._proc = self._spawn()
                    break
                except OSError:
                    log.exception("cannot start the log writer child; retrying")
            sent = [b for b in self._barriers if b not in self._unsent]
            if sent:
                self._send_locked(orjson.dumps(["s", sent]))
            return True

    def _spool_unacked(self) -> None:
        """Append unacknowledged batches to the spool (fsynced); the next child replays them."""
        batches = [self._unacked.pop(s) for s in sorted(self._unacked)]
        records = [r for b in batches for r in b]
        if records:
            self.spool.append(records)
            metrics.SPOOLED.inc(len(records))
        self.spool.rotate()

    def _spawn(self) -> _Proc:
        return _Proc([*self._args, "1" if self.db_up else "0"])


def _encode(batch: list[Any]) -> bytes:
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
