"""The writer: migrations, batching, idempotent replay, queue-full spill, zero drops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from prometheus_client import REGISTRY

from gateway.log.relay import Relay
from gateway.log.service import LogService
from gateway.log.spool import Spool
from gateway.log.writer import spool_folder
from gateway.store import db
from tests.log.records import make_record

TABLES = {"interactions", "feedback", "datasets", "jobs", "adapters", "routes", "api_keys"}


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_migrations_create_every_table_and_are_idempotent(database_url: str) -> None:
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    db.upgrade(engine)  # second run: already at head, no error
    names = set(sa.inspect(engine).get_table_names())
    assert TABLES <= names
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("interactions")}
    assert {"ix_interactions_created_id", "ix_interactions_requested_model",
            "ix_interactions_project_created"} <= indexes
    heads = ScriptDirectory(str(db.MIGRATIONS)).get_heads()
    with engine.connect() as conn:
        assert [conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()] == heads
    engine.dispose()


def test_plain_postgresql_url_is_rewritten_to_psycopg3() -> None:
    assert db.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


async def test_batches_and_reads_its_writes(database_url: str, tmp_path: Path) -> None:
    batches_before = metric("tuneloop_log_write_seconds_count")
    written_before = metric("tuneloop_log_records_written_total")
    dropped_before = metric("tuneloop_log_records_dropped_total")
    service = await LogService.open(database_url, tmp_path)
    records = [make_record(i) for i in range(3000)]
    for r in records:
        service.submit(r)
    await service.sync()  # barrier: every record above is committed now
    assert await asyncio.to_thread(service.store.count) == 3000
    batches = metric("tuneloop_log_write_seconds_count") - batches_before
    assert 1 <= batches < 300, f"{batches} inserts for 3000 records: not batching"
    assert metric("tuneloop_log_records_written_total") - written_before == 3000
    row = service.store.record(records[7].id)
    assert row is not None and row["request"] == records[7].request
    assert row["response"] == records[7].response and row["store"] is True
    await service.close()
    assert metric("tuneloop_log_records_dropped_total") == dropped_before


async def test_duplicates_are_stored_once(database_url: str, tmp_path: Path) -> None:
    service = await LogService.open(database_url, tmp_path)
    record = make_record(1)
    for _ in range(3):
        service.submit(record)
        await service.sync()
    assert service.store.count() == 1
    await service.close()


async def test_queue_full_spills_to_spool_and_loses_nothing(database_url: str,
                                                            tmp_path: Path) -> None:
    dropped_before = metric("tuneloop_log_records_dropped_total")
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    spool = Spool(spool_folder(tmp_path))
    relay = Relay(database_url, tmp_path, spool, queue_size=10, batch_size=2000, probe_interval=1.0,
                  db_up=True)
    records = [make_record(i) for i in range(100)]
    for r in records:  # the feeder is not started: the queue fills after 10
        relay.submit(r)
    assert relay.queue_depth() == 10
    assert spool.records == 90 and len(spool.files()) == 1
    relay.start()  # the child replays the spool, the feeder sends the queue
    relay.stop()
    relay.join()
    with engine.connect() as conn:
        ids = set(conn.execute(sa.text("SELECT id FROM interactions")).scalars())
    assert ids == {r.id for r in records}
    assert spool.files() == [] and spool.records == 0
    assert metric("tuneloop_log_records_dropped_total") == dropped_before
    engine.dispose()


async def test_spool_replay_is_idempotent_and_survives_a_torn_line(database_url: str,
                                                                   tmp_path: Path) -> None:
    """A crash between commit and unlink replays records twice: still stored once."""
    records = [make_record(i) for i in range(50)]
    service = await LogService.open(database_url, tmp_path)
    for r in records[:20]:
        service.submit(r)
    await service.close()
    spool = Spool(tmp_path / "spool")
    spool.append(records)  # 20 already stored + 30 new
    spool.close()
    with open(spool.files()[0], "ab") as f:
        f.write(b'{"id": "chatcmpl-torn", "requ')  # a crash mid-write
    service = await LogService.open(database_url, tmp_path)  # startup replays the spool
    await service.sync()
    assert sorted(service.store.ids()) == sorted(r.id for r in records)
    assert Spool(tmp_path / "spool").files() == []
    await service.close()


async def test_sync_is_cheap_when_idle(tmp_path: Path) -> None:
    service = await LogService.open(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    await service.sync()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(50):
        await service.sync()
    assert (loop.time() - t0) / 50 < 0.02
    await service.close()


async def test_submit_after_close_goes_to_the_spool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    service = await LogService.open(url, tmp_path)
    await service.close()
    late = make_record(1)
    service.submit(late)  # shutdown race: must not be lost
    service = await LogService.open(url, tmp_path)
    await service.sync()
    assert service.store.ids() == [late.id]
    await service.close()


def test_schema_module_matches_the_migrations(database_url: str) -> None:
    """The declared tables (what the code uses) and the migrations (what databases get) agree, for every table."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from gateway.store import metadata as all_tables

    metadata = all_tables()

    engine = db.create_engine(database_url)
    db.upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert {_table_of(d) for d in diffs} == set(), diffs
    names = set(metadata.tables)
    assert {"interactions", "feedback", "files", "jobs", "job_events", "job_checkpoints", "adapters", "routes",
            "route_history", "loop_cycles", "api_keys", "datasets", "dataset_records"} <= names, names


def _table_of(diff: object) -> str | None:
    """The table an alembic diff is about (diffs come in a few tuple shapes)."""
    item = diff[0] if isinstance(diff, list) else diff
    assert isinstance(item, tuple)
    if isinstance(item[1], (sa.Table, sa.Index, sa.UniqueConstraint, sa.ForeignKeyConstraint)):
        return item[1].table.name if not isinstance(item[1], sa.Table) else item[1].name
    return item[2] if len(item) > 2 and isinstance(item[2], str) else None
