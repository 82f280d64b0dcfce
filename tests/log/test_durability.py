"""Durability for real: a PostgreSQL outage mid-traffic, and SIGTERM mid-traffic."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import REGISTRY

from gateway.log.service import LogService
from gateway.log.spool import Spool
from gateway.store import db
from tests.fixtures.database import PgCluster
from tests.log.records import make_record

ROOT = Path(__file__).resolve().parents[2]


def dropped() -> float:
    return REGISTRY.get_sample_value("tuneloop_log_records_dropped_total") or 0.0


def stored_ids(url: str) -> list[str]:
    engine = db.create_engine(url)
    with engine.connect() as conn:
        ids = list(conn.execute(sa.text("SELECT id FROM interactions")).scalars())
    engine.dispose()
    return ids


async def _traffic(service: LogService, sent: list[str], stop: asyncio.Event) -> None:
    """~5k records/s until told to stop, like a gateway under load."""
    while not stop.is_set():
        for _ in range(25):
            record = make_record(len(sent))
            service.submit(record)
            sent.append(record.id)
        await asyncio.sleep(0.005)


async def test_postgres_outage_loses_nothing_and_duplicates_nothing(pg_cluster: PgCluster,
                                                                    tmp_path: Path) -> None:
    dropped_before = dropped()
    service = await LogService.open(pg_cluster.url, tmp_path, probe_interval=0.2)
    sent: list[str] = []
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(service, sent, stop))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(pg_cluster.stop, "immediate")  # the server dies mid-run
    at_stop = len(sent)
    await asyncio.sleep(1.5)  # traffic goes on while it is down
    assert not service.writer.db_up
    spool = Spool(tmp_path / "spool")
    assert spool.files(), "records sent during the outage must be in the spool"
    assert len(sent) > at_stop + 1000
    await asyncio.to_thread(pg_cluster.start)
    await asyncio.sleep(1.0)  # traffic goes on after it is back
    stop.set()
    await traffic
    await service.sync(timeout=30)
    assert service.writer.db_up
    ids = stored_ids(pg_cluster.url)
    assert len(ids) == len(sent) and set(ids) == set(sent)  # every record exactly once
    assert spool.files() == []
    await service.close()
    assert dropped() == dropped_before


async def test_startup_with_database_down_spools_then_migrates_and_replays(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    pg_cluster.stop("immediate")
    service = await LogService.open(pg_cluster.url, tmp_path, probe_interval=0.2)
    records = [make_record(i) for i in range(200)]
    for r in records:
        service.submit(r)
    await service.sync(timeout=0.5)  # cannot complete: times out, does not raise
    assert not service.writer.db_up
    pg_cluster.start()
    await service.sync(timeout=30)
    assert sorted(stored_ids(pg_cluster.url)) == sorted(r.id for r in records)
    await service.close()


def test_sigterm_mid_traffic_loses_nothing(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.log.sigterm_worker", database_url, str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    n = int(out.split()[-1])
    assert n > 1000, "the worker should have been mid-traffic"
    ids = stored_ids(database_url)
    assert sorted(ids) == [f"chatcmpl-sig-{i:07d}" for i in range(n)]
    assert Spool(tmp_path / "spool").files() == []
