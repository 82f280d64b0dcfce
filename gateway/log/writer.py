"""The log writer: a bounded in-memory queue drained by one thread into the database.

Why a thread: the database drivers are synchronous, and a thread keeps every insert,
fsync and reconnect off the event loop. ``submit`` is a deque append plus an event
set (O(1), no lock held while the database works).

States: *up* (batches go to the DB) and *down* (batches go to the spool, and the DB is
probed every ``probe_interval`` seconds; when it answers, the spool is replayed in
order and the writer is up again). A full queue spills to the spool instead of
dropping. Barriers (``sync``) complete once every record submitted before them is
committed: the writer takes the barriers, drains the queue, replays any spool, and
only then releases them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.log import metrics
from gateway.log.sink import Sink, is_transient, to_row
from gateway.log.spool import Spool, write_rejected

log = logging.getLogger(__name__)

Barrier = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Writer(threading.Thread):
    def __init__(self, sink: Sink, spool: Spool, *, queue_size: int = 100_000,
                 batch_size: int = 2000, probe_interval: float = 1.0) -> None:
        super().__init__(name="tuneloop-log-writer", daemon=True)
        self.sink, self.spool = sink, spool
        self.queue_size, self.batch_size = queue_size, batch_size
        self.probe_interval = probe_interval
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._barriers: list[Barrier] = []
        self._barrier_lock = threading.Lock()
        self._stopping = False
        self._stopped = False
        self.db_up = True
        self._next_probe = 0.0
        metrics.register(self)

    # ---- called from any thread ----
    def submit(self, record: Any) -> None:
        try:
            if self._stopped or len(self._queue) >= self.queue_size:
                self._spill(record)  # full (or closed): to disk, never dropped
                return
            self._queue.append(record)
            self._wake.set()
        except Exception:  # the request path must never see a logging failure
            log.exception("log submit failed")
            self._spill(record)

    def _spill(self, record: Any) -> None:
        try:
            self.spool.append([record])
            metrics.SPOOLED.inc()
            if self._stopped:
                self.spool.flush()  # no writer pass will come to fsync it
            self._wake.set()  # the writer fsyncs and, if the DB is up, replays
        except Exception:
            metrics.DROPPED.inc()
            log.exception("interaction record %s lost: spool unwritable",
                          getattr(record, "id", "?"))

    def add_barrier(self, barrier: Barrier) -> None:
        with self._barrier_lock:
            self._barriers.append(barrier)
        self._wake.set()

    def queue_depth(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    # ---- driven directly (the writer child process runs no thread) ----
    def write_batch(self, records: Sequence[Any]) -> None:
        """Commit ``records`` or spool them durably; raises if neither worked."""
        self._queue.extend(records)
        self._drain()
        self.spool.flush()

    def tick(self) -> None:
        """One writer pass: fsync the spool, probe the DB if down, replay the spool if up."""
        self._pass()

    def finish(self) -> None:
        self._finish()

    # ---- the writer thread ----
    def run(self) -> None:
        try:
            while True:
                self._wake.wait(timeout=self.probe_interval)
                self._wake.clear()
                with self._barrier_lock:
                    barriers, self._barriers = self._barriers, []
                self._pass()
                if self.db_up:
                    _release(barriers)
                else:
                    with self._barrier_lock:
                        self._barriers[:0] = barriers  # released once the DB is back
                if self._stopping and not self._queue:
                    break
        finally:
            self._finish()

    def _pass(self) -> None:
        """One round: drain the queue, fsync the spool, replay it if the DB is up."""
        try:
            self._drain()
        except Exception:
            log.exception("log writer pass failed")  # keep the thread alive
        try:
            self.spool.flush()
        except Exception:
            log.exception("spool fsync failed")
        if not self.db_up and time.monotonic() >= self._next_probe:
            self.db_up = self.sink.ping()
            self._next_probe = time.monotonic() + self.probe_interval
            if self.db_up:
                log.warning("log database reachable again; replaying the spool")
        if self.db_up and self.spool.pending():
            self._replay()

    def _drain(self) -> None:
        q = self._queue
        while q:
            batch = [q.popleft() for _ in range(min(len(q), self.batch_size))]
            if self.db_up and self._write(batch):
                continue
            self.spool.append(batch)
            metrics.SPOOLED.inc(len(batch))

    def _write(self, batch: Sequence[Any]) -> bool:
        """Commit a batch; False on an outage (the caller spools it)."""
        rows = [to_row(r) for r in batch]
        t0 = time.perf_counter()
        try:
            self.sink.insert(rows)
        except Exception as exc:
            if is_transient(exc):
                self._went_down(exc)
                return False
            self._write_one_by_one(batch)
            return True
        metrics.WRITE_SECONDS.observe(time.perf_counter() - t0)
        metrics.WRITTEN.inc(len(rows))
        return True

    def _write_one_by_one(self, batch: Sequence[Any]) -> None:
        """A batch the DB refused for its data: find the bad records, keep them aside."""
        for record in batch:
            try:
                self.sink.insert([to_row(record)])
                metrics.WRITTEN.inc()
            except Exception as exc:
                if is_transient(exc):
                    self._went_down(exc)
                    self.spool.append([record])
                    continue
                log.error("log database refused record %s: %s", getattr(record, "id", "?"), exc)
                write_rejected(self.spool.folder, [record])
                metrics.REJECTED.inc()

    def _went_down(self, exc: BaseException) -> None:
        if self.db_up:
            log.warning("log database unreachable (%s); spooling to %s", exc, self.spool.folder)
        self.db_up = False
        self._next_probe = time.monotonic() + self.probe_interval

    def _replay(self) -> None:
        def insert(records: list[dict[str, Any]]) -> None:
            if not self._write(records):
                raise ConnectionError("log database went away during replay")

        try:
            n = self.spool.replay(insert, batch=self.batch_size)
            if n:
                log.warning("replayed %d spooled interaction records", n)
        except ConnectionError:
            pass  # stays down; the rest is replayed on the next probe
        except Exception:
            log.exception("spool replay failed")

    def _finish(self) -> None:
        """Stopping: whatever is left goes to the DB or the spool, durably."""
        self._stopped = True
        try:
            self._drain()
        finally:
            self.spool.close()
            self.sink.close()
            with self._barrier_lock:
                barriers, self._barriers = self._barriers, []
            _release(barriers)


def _release(barriers: list[Barrier]) -> None:
    for loop, fut in barriers:
        try:
            loop.call_soon_threadsafe(_set_done, fut)
        except RuntimeError:
            pass  # that loop is closed; nobody waits any more


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def spool_folder(home: Path) -> Path:
    return Path(home) / "spool"
