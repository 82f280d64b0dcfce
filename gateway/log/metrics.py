"""Prometheus metrics of the log writer (default registry, one set per process).

Gauges are computed at scrape time from every live writer in the process, so tests
that open several services, or an app that reopens one, stay correct.
"""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_writers: weakref.WeakSet[Any] = weakref.WeakSet()

QUEUE_DEPTH = Gauge("tuneloop_log_queue_depth", "Interaction records waiting in memory")
SPOOL_RECORDS = Gauge("tuneloop_log_spool_records", "Interaction records in the on-disk spool")
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

QUEUE_DEPTH.set_function(lambda: float(sum(w.queue_depth() for w in list(_writers))))
SPOOL_RECORDS.set_function(lambda: float(sum(w.spool.records for w in list(_writers))))


def register(writer: Any) -> None:
    _writers.add(writer)
