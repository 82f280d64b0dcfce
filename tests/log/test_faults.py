"""Faults the log writer must survive: a child that hangs (SIGSTOP), a spool whose disk is full."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.log.service import LogService
from tests.fixtures.database import PgCluster
from tests.log.records import make_record
from tests.log.test_child import _wait_for
from tests.log.test_durability import _traffic, stored_ids


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_stopped_writer_child_is_replaced_and_nothing_is_lost(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELOOP_LOG_WRITER_STALL_S", "1.5")
    hung = metric("tuneloop_log_writer_restarts_total", reason="hung")
    service = await LogService.open(database_url, tmp_path)
    first = service.writer.pid
    sent: list[str] = []
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(service, sent, stop))
    try:
        await asyncio.sleep(0.3)
        os.kill(first, signal.SIGSTOP)  # alive but silent: no exit for the reader to see
        at_stop = len(sent)
        await _wait_for(lambda: service.writer.pid != first, timeout=30)
        await asyncio.sleep(0.5)  # traffic goes on into the new child
        assert len(sent) > at_stop + 500
    finally:
        stop.set()
        await traffic
    await service.sync(timeout=30)
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)  # killed and reaped, not left stopped
    assert metric("tuneloop_log_writer_restarts_total", reason="hung") == hung + 1
    ids = stored_ids(database_url)
    assert len(ids) == len(sent) and set(ids) == set(sent)  # every record exactly once
    await service.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs where the spool goes (``home/spool``): mounting needs root."""
    spool = tmp_path / "home" / "spool"
    spool.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(spool)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs for the spool: {done.stderr.strip()}")
    try:
        yield tmp_path / "home"
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


async def test_a_full_spool_disk_holds_then_counts_what_it_cannot_keep(
        pg_cluster: PgCluster, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """DB down and no room to spool: records wait in memory up to the queue's bound, the rest
    are counted lost with a log line; serving goes on; once the DB is back, what was held lands."""
    caplog.set_level(logging.ERROR, logger="gateway.log")
    dropped = metric("tuneloop_log_records_dropped_total")
    service = await LogService.open(pg_cluster.url, small_disk, queue_size=3000, probe_interval=0.2)
    await asyncio.to_thread(pg_cluster.stop, "immediate")
    sent = []
    for i in range(6000):  # ~2 KB each: far more than 256 KiB of spool
        record = make_record(i)
        service.submit(record)  # never raises, never blocks
        sent.append(record.id)
        if i % 200 == 0:
            await asyncio.sleep(0.01)
    await _wait_for(lambda: metric("tuneloop_log_spool_unwritable") == 1, timeout=30)
    lost = metric("tuneloop_log_records_dropped_total") - dropped
    assert lost > 0 and "interaction records lost" in caplog.text
    await asyncio.to_thread(pg_cluster.start)
    await service.sync(timeout=60)
    stored = stored_ids(pg_cluster.url)
    assert len(stored) == len(set(stored)) and set(stored) <= set(sent)
    assert len(stored) + lost == len(sent)  # what was not kept is exactly what the metric says
    assert metric("tuneloop_log_spool_unwritable") == 0
    await service.close()
    assert metric("tuneloop_log_records_dropped_total") - dropped == lost
