"""The gateway's side of the log writer: an in-memory buffer relayed to a child process.

``submit`` only appends to a deque (O(1), never raises, never blocks). A feeder thread
wakes on the first record (then gathers for ``FLUSH_S`` or ``FLUSH_RECORDS``), encodes
batches with orjson and writes them to the writer child (child.py), which does every
insert, fsync and replay on its own CPU and GIL. A reader thread takes the child's
acknowledgements (by batch sequence number), applies its metrics and releases sync
barriers.

No record is lost: a batch stays in ``_unacked`` until the child says it is committed
or spooled. If the child dies, the reader thread appends every unacknowledged batch to
the spool (fsynced; if the spool cannot be written, they are sent again to the next
child instead), starts a new child (which replays the spool first) and sends it the
pending barriers again. A child that says nothing for ``stall_s`` (it sends a status at
least every half second; stopped, deadlocked, stuck in a call) is killed and replaced
the same way: the watchdog. On close, what the child did not acknowledge is spooled
here. A full buffer spills to the spool, as before.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.log import metrics
from gateway.log.pipe import Barrier, Proc, encode, release
from gateway.log.spool import Spool

log = logging.getLogger(__name__)

FLUSH_S = 0.004  # how long the feeder gathers records before a write to the child
FLUSH_RECORDS = 512  # ... unless this many are waiting
START_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 120.0  # the child may be replaying a spool or spooling a backlog
STALL_ENV = "TUNELOOP_LOG_WRITER_STALL_S"  # silence after which a child counts as hung
STALL_S = 15.0


class Relay:
    def __init__(self, database_url: str, home: Path, spool: Spool, *, queue_size: int,
                 batch_size: int, probe_interval: float, db_up: bool,
                 stall_s: float | None = None) -> None:
        self.spool = spool
        self.stall_s = stall_s or float(os.environ.get(STALL_ENV) or STALL_S)
        self.spool.records = 0  # files already there are the child's to count and replay
        self.queue_size, self.batch_size = queue_size, batch_size
        self._args = [database_url, str(home), str(batch_size), str(probe_interval)]
        self._queue: collections.deque[Any] = collections.deque()
        self._wake, self._full = threading.Event(), threading.Event()
        self._lock = threading.Lock()  # writes to the child's pipe, and its restarts
        self._unacked: dict[int, list[Any]] = {}
        self._inflight = 0  # records in _unacked (changed under _count, never held across I/O)
        self._count = threading.Lock()
        self._seq = itertools.count(1)
        self._bid = itertools.count(1)
        self._barriers: dict[int, Barrier] = {}
        self._unsent: list[int] = []  # barrier ids the feeder has not sent yet
        self._status: dict[str, Any] = {"db_up": db_up, "spool": 0}
        self._hello = threading.Event()  # the first child is up
        self._stopping = self._stopped = False
        self.restarts = 0
        self._lost_unsaid, self._lost_said_at = 0, 0.0
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

    def submit(self, record: Any) -> bool:
        """Queue ``record`` (or spool it); False only when it could be kept nowhere (lost)."""
        try:
            q = self._queue
            if self._stopped or len(q) + self._inflight >= self.queue_size:
                return self._spill(record)  # full (or closed): to disk, never dropped
            q.append(record)
            n = len(q)
            if n == 1:
                self._wake.set()
            elif n == FLUSH_RECORDS:
                self._full.set()
            return True
        except Exception:  # the request path must never see a logging failure
            log.exception("log submit failed")
            return self._spill(record)

    def _spill(self, record: Any) -> bool:
        try:
            self.spool.append([record])
            metrics.SPOOLED.inc()
            if self._stopped:
                self.spool.rotate()  # fsynced and unlocked: the next child replays it
            self._wake.set()  # the feeder hands the file over to the child
            return True
        except Exception as exc:
            self._lost(1, exc)
            return False

    def _lost(self, n: int, why: BaseException) -> None:
        """Records that could be kept nowhere: counted, and said at most every 5 s."""
        metrics.DROPPED.inc(n)
        self._lost_unsaid += n
        now = time.monotonic()
        if now - self._lost_said_at >= 5.0 or self._stopped:
            self._lost_said_at = now
            log.error("%d interaction records lost: the spool cannot be written (%s)", self._lost_unsaid, why)
            self._lost_unsaid = 0

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
        return len(self._queue) + self._inflight

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
            if not self._spool_unacked():
                self._drop_unacked()
            leftover = list(self._queue)
            self._queue.clear()
            try:
                if leftover:
                    self.spool.append(leftover)
                    metrics.SPOOLED.inc(len(leftover))
            except OSError as exc:
                self._lost(len(leftover), exc)
            self.spool.close()
            barriers, self._barriers = list(self._barriers.values()), {}
        release(barriers)

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
            payload = encode(batch)
            with self._lock:
                seq = next(self._seq)
                self._unacked[seq] = batch
                with self._count:
                    self._inflight += len(batch)
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
                if not proc.rx.poll(self._patience(proc)):
                    self._hung(proc)  # its pipe closes: the next read is EOF, then _recover
                    continue
                msg = orjson.loads(proc.rx.recv_bytes())
            except (EOFError, OSError):
                if proc.closed or not self._recover(proc):
                    return
                continue
            self._handle(proc, msg)

    def _patience(self, proc: Proc) -> float | None:
        """How long the child may stay silent: a start may take long, a close longer (join bounds it)."""
        if self._stopping:
            return None
        return self.stall_s if proc.hello else START_TIMEOUT_S

    def _hung(self, proc: Proc) -> None:
        if self._stopping or proc.popen.poll() is not None:
            return
        log.error("log writer child %d sent nothing for %.0fs (hung? stopped?); replacing it",
                  proc.popen.pid, self._patience(proc) or 0)
        proc.hung = True
        proc.popen.kill()  # SIGKILL: also ends a stopped process

    def _handle(self, proc: Proc, msg: list[Any]) -> None:
        status = msg[-1]
        metrics.apply(status)
        self._status = {"db_up": status["db_up"], "spool": status["spool"]}
        metrics.UNWRITABLE.set(1 if status.get("held") else 0)
        if msg[0] == "hello":
            self.spool.records = 0  # the child counted every file on disk, ours too
            proc.hello = True
            self._hello.set()
        elif msg[0] == "ack":
            with self._count:  # not _lock: the feeder may hold it, blocked on a full pipe to the child
                for seq in msg[1]:
                    self._inflight -= len(self._unacked.pop(seq, ()))
            release([b for b in map(self._barriers.pop, msg[2], itertools.repeat(None)) if b])
        elif msg[0] == "closed":
            proc.closed = True

    def _recover(self, proc: Proc) -> bool:
        """The child died: spool what it did not acknowledge, start another (unless closing)."""
        with self._lock:
            rc = proc.end()
            log.error("log writer child %d exited (%s); %d batches unacknowledged",
                      proc.popen.pid, rc, len(self._unacked))
            metrics.RESTARTS.labels("hung" if proc.hung else "exited").inc()
            kept = self._spool_unacked()
            if self._stopping:
                if not kept:
                    self._drop_unacked()
                return False
            while True:
                time.sleep(min(1.0, 0.1 * self.restarts))  # one that cannot start: no busy loop
                self.restarts += 1
                try:  # after a hang, the new child probes the DB before trusting it
                    self._proc = self._spawn(db_up=self.db_up and not proc.hung)
                    break
                except OSError:
                    log.exception("cannot start the log writer child; retrying")
            for seq in sorted(self._unacked):  # the spool could not take them: the new child may
                self._send_locked(b'["b",%d,%s]' % (seq, encode(self._unacked[seq])))
            sent = [b for b in self._barriers if b not in self._unsent]
            if sent:
                self._send_locked(orjson.dumps(["s", sent]))
            return True

    def _spool_unacked(self) -> bool:
        """Append unacknowledged batches to the spool (fsynced); the next child replays them.
        False if the spool cannot be written (disk full): they stay in ``_unacked``."""
        records = [r for s in sorted(self._unacked) for r in self._unacked[s]]
        try:
            if records:
                self.spool.append(records)
            self.spool.rotate()
        except OSError:
            log.exception("cannot spool %d unacknowledged records; holding them", len(records))
            return False
        with self._count:
            self._unacked.clear()
            self._inflight = 0
        metrics.SPOOLED.inc(len(records))
        return True

    def _drop_unacked(self) -> None:
        with self._count:
            n = sum(len(b) for b in self._unacked.values())
            self._unacked.clear()
            self._inflight = 0
        if n:
            self._lost(n, OSError("closing with the database down and the spool unwritable"))

    def _spawn(self, db_up: bool | None = None) -> Proc:
        return Proc([*self._args, "1" if (self.db_up if db_up is None else db_up) else "0"])
