"""The writer child process: killed mid-traffic, killed before close, metrics relayed back."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from prometheus_client import REGISTRY

from gateway.log.service import LogService
from gateway.log.spool import Spool
from tests.log.records import make_record
from tests.log.test_durability import _traffic, stored_ids


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def _wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_writer_child_killed_mid_traffic_loses_nothing_and_restarts(
        database_url: str, tmp_path: Path) -> None:
    dropped_before = metric("tuneloop_log_records_dropped_total")
    service = await LogService.open(database_url, tmp_path)
    first = service.writer.pid
    assert first != os.getpid()
    sent: list[str] = []
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(service, sent, stop))
    await asyncio.sleep(0.5)
    for _ in range(2):  # twice: the replacement is watched too
        os.kill(service.writer.pid, signal.SIGKILL)
        at_kill = len(sent)
        await asyncio.sleep(0.7)  # traffic goes on while it is gone and while it restarts
        assert len(sent) > at_kill + 200
    stop.set()
    await traffic
    await service.sync(timeout=30)
    assert service.writer.restarts == 2 and service.writer.pid != first
    ids = stored_ids(database_url)
    assert len(ids) == len(sent) and set(ids) == set(sent)  # every record exactly once
    assert Spool(tmp_path / "spool").files() == []
    await service.close()
    assert metric("tuneloop_log_records_dropped_total") == dropped_before


async def test_child_dead_at_close_leaves_its_batches_in_the_spool(database_url: str,
                                                                   tmp_path: Path) -> None:
    """Close cannot flush through a dead child: the gateway spools what was not acknowledged."""
    service = await LogService.open(database_url, tmp_path)
    child = service.writer.pid
    os.kill(child, signal.SIGSTOP)  # frozen: reads nothing, acknowledges nothing
    records = [make_record(i) for i in range(20)]  # ~40 KB: fits in the pipe
    for r in records:
        service.submit(r)
    await _wait_for(lambda: len(service.writer._queue) == 0)  # noqa: SLF001 - sent, unacked
    assert service.writer.queue_depth() == 20
    closing = asyncio.create_task(service.close())
    await asyncio.sleep(0.3)  # the close message is in the pipe too
    os.kill(child, signal.SIGKILL)
    await closing
    assert service.writer.restarts == 0  # closing: no new child, the spool takes them
    assert stored_ids(database_url) == []
    spool = Spool(tmp_path / "spool")
    assert spool.records == 20 and len(spool.files()) == 1
    service = await LogService.open(database_url, tmp_path)  # the new child replays it
    await service.sync(timeout=30)
    assert sorted(stored_ids(database_url)) == sorted(r.id for r in records)
    assert Spool(tmp_path / "spool").files() == []
    await service.close()


async def test_child_metrics_reach_the_gateway_registry(database_url: str,
                                                        tmp_path: Path) -> None:
    written = metric("tuneloop_log_records_written_total")
    batches = metric("tuneloop_log_write_seconds_count")
    service = await LogService.open(database_url, tmp_path)
    for i in range(300):
        service.submit(make_record(i))
    await service.sync()
    assert metric("tuneloop_log_records_written_total") - written == 300
    assert metric("tuneloop_log_write_seconds_count") > batches
    assert metric("tuneloop_log_queue_depth") == 0
    assert metric("tuneloop_log_spool_records") == 0
    await service.close()
