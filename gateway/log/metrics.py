"""Prometheus metrics of the log writer (default registry, one set per process).

Gauges are computed at scrape time from every live writer in the process, so tests
that open several services, or an app that reopens one, stay correct. The writer
child process (child.py) counts into a ``Tally`` instead; its deltas travel back with
every acknowledgement and ``apply`` adds them here, so the gateway's ``/metrics``
shows them under the same names.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_writers: weakref.WeakSet[Any] = weakref.WeakSet()

# "livesum": with several gateway workers (Prometheus multiprocess mode) the scrape shows
# the sum over the live workers.
QUEUE_DEPTH = Gauge("tuneloop_log_queue_depth", "Interaction records waiting in memory",
                    multiprocess_mode="livesum")
SPOOL_RECORDS = Gauge("tuneloop_log_spool_records", "Interaction records in the on-disk spool",
                      multiprocess_mode="livesum")
WRITE_SECONDS = Histogram(
    "tuneloop_log_write_seconds",
    "Time to commit one batch of interaction records",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WRITTEN = Counter("tuneloop_log_records_written_total", "Interaction records committed")
DROPPED = Counter(
    "tuneloop_log_records_dropped_total",
    "Interaction records lost (queue and spool both failed); must stay 0",
)
SPOOLED = Counter("tuneloop_log_records_spooled_total", "Interaction records written to the spool")
REJECTED = Counter(
    "tuneloop_log_records_rejected_total",
    "Records the database refused (kept in spool/rejected-*.jsonl, not lost)",
)
RESTARTS = Counter(
    "tuneloop_log_writer_restarts_total",
    "Log-writer children replaced: it exited, or it sent nothing for the stall timeout (hung)",
    ["reason"],
)
UNWRITABLE = Gauge(
    "tuneloop_log_spool_unwritable",
    "1 while the spool cannot be written (disk full?) and records wait in memory",
    multiprocess_mode="max",
)

def _queue_depth() -> float:
    return float(sum(w.queue_depth() for w in list(_writers)))


def _spool_records() -> float:
    return float(max(0, sum(_spooled(w) for w in list(_writers))))


def refresh() -> None:
    """Multiprocess mode keeps gauges in files, so computed-at-scrape gauges cannot work
    there: the app calls this every second instead."""
    QUEUE_DEPTH.set(_queue_depth())
    SPOOL_RECORDS.set(_spool_records())


if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    QUEUE_DEPTH.set_function(_queue_depth)
    SPOOL_RECORDS.set_function(_spool_records)


def _spooled(writer: Any) -> int:
    fn = getattr(writer, "spool_records", None)
    return fn() if fn is not None else writer.spool.records


def register(writer: Any) -> None:
    _writers.add(writer)


class Tally:
    """Stands in for the counters and the histogram in the writer child."""

    def __init__(self) -> None:
        self.counts = {"written": 0, "spooled": 0, "rejected": 0, "dropped": 0}
        self.seconds: list[float] = []

    def take(self) -> dict[str, Any]:
        out = {**self.counts, "seconds": self.seconds}
        self.counts = dict.fromkeys(self.counts, 0)
        self.seconds = []
        return out


class _Count:
    def __init__(self, tally: Tally, name: str) -> None:
        self.tally, self.name = tally, name

    def inc(self, n: float = 1) -> None:
        self.tally.counts[self.name] += int(n)


class _Seconds:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def observe(self, v: float) -> None:
        self.tally.seconds.append(v)


def relay() -> Tally:
    """In the writer child: count into a Tally (sent to the gateway) instead of a registry."""
    global WRITTEN, SPOOLED, REJECTED, DROPPED, WRITE_SECONDS
    tally = Tally()
    WRITTEN, SPOOLED = _Count(tally, "written"), _Count(tally, "spooled")  # type: ignore[assignment]
    REJECTED, DROPPED = _Count(tally, "rejected"), _Count(tally, "dropped")  # type: ignore[assignment]
    WRITE_SECONDS = _Seconds(tally)  # type: ignore[assignment]
    return tally


def apply(status: dict[str, Any]) -> None:
    """In the gateway: add a child's deltas (from ``Tally.take``) to the real metrics."""
    for name, metric in (("written", WRITTEN), ("spooled", SPOOLED),
                         ("rejected", REJECTED), ("dropped", DROPPED)):
        if status.get(name):
            metric.inc(status[name])
    for v in status.get("seconds", ()):
        WRITE_SECONDS.observe(v)
