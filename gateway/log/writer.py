"""The log writer: batches into the database, or into the spool while it is away.

It runs inside the writer child process (``gateway/log/child.py``), which feeds it the
batches the gateway sends and calls ``tick`` between them; the gateway process itself
never touches the database (``gateway/log/relay.py``).

States: *up* (batches go to the DB) and *down* (batches go to the spool, and the DB is
probed every ``probe_interval`` seconds; when it answers, the spool is replayed in
order and the writer is up again). Records the database refuses for their content are
kept aside in ``spool/rejected-*.jsonl``, never dropped.

With the DB down *and* the spool unwritable (its disk full), records wait in memory
(``held``: the child does not acknowledge their batches meanwhile, so the gateway's
bound on records in flight bounds them too) and are tried again on every pass.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.log import metrics
from gateway.log.sink import Sink, is_transient, split
from gateway.log.spool import Spool, write_rejected

log = logging.getLogger(__name__)


class Writer:
    def __init__(self, sink: Sink, spool: Spool, *, batch_size: int = 2000,
                 probe_interval: float = 1.0) -> None:
        self.sink, self.spool = sink, spool
        self.batch_size = batch_size
        self.probe_interval = probe_interval
        # called after every DB batch, so a long replay keeps the watchdog fed (the child sets it)
        self.beat: Callable[[], None] = lambda: None
        self._queue: collections.deque[Any] = collections.deque()
        self.db_up = True
        self._next_probe = 0.0
        self._said_at = 0.0

    @property
    def held(self) -> int:
        """Records neither committed nor spooled (DB down and spool unwritable)."""
        return len(self._queue)

    def write_batch(self, records: Sequence[Any]) -> None:
        """Commit ``records``, spool them durably, or hold them (see ``held``)."""
        self._queue.extend(records)
        self._drain()
        self._fsync()

    def tick(self) -> None:
        """One writer pass: fsync the spool, probe the DB if down, replay the spool if up."""
        self._pass()

    def finish(self) -> None:
        """Stopping: whatever is left goes to the DB or the spool, durably."""
        try:
            self._drain()  # what it still holds stays unacknowledged: the gateway tries to spool it
        finally:
            self.spool.close()
            self.sink.close()

    def _pass(self) -> None:
        """One round: drain the queue, fsync the spool, replay it if the DB is up."""
        try:
            self._drain()
        except Exception:
            log.exception("log writer pass failed")  # keep the child alive
        self._fsync()
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
            try:
                self.spool.append(batch)
            except OSError as exc:
                q.extendleft(reversed(batch))  # in order, for the next pass
                self._unwritable(exc)
                return
            metrics.SPOOLED.inc(len(batch))

    def _fsync(self) -> None:
        try:
            self.spool.flush()
        except OSError:
            log.exception("spool fsync failed")

    def _unwritable(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._said_at >= 5.0:  # one line every 5 s at most
            self._said_at = now
            log.error("log database down and the spool unwritable (%s): %d records held in memory",
                      exc, len(self._queue))

    def _write(self, batch: Sequence[Any]) -> bool:
        """Commit a batch; False on an outage (the caller spools it)."""
        rows, stored = split(batch)
        t0 = time.perf_counter()
        try:
            self.sink.insert(rows, stored)
        except Exception as exc:
            if is_transient(exc):
                self._went_down(exc)
                return False
            self._write_one_by_one(batch)
            return True
        metrics.WRITE_SECONDS.observe(time.perf_counter() - t0)
        metrics.WRITTEN.inc(len(batch))  # stored responses count as records too
        self.beat()
        return True

    def _write_one_by_one(self, batch: Sequence[Any]) -> None:
        """A batch the DB refused for its data: find the bad records, keep them aside."""
        for record in batch:
            try:
                self.sink.insert(*split([record]))
                metrics.WRITTEN.inc()
            except Exception as exc:
                if is_transient(exc):
                    self._went_down(exc)
                    self._queue.append(record)  # the drain loop spools (or holds) it
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


def spool_folder(home: Path) -> Path:
    return Path(home) / "spool"
