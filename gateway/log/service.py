"""``LogService``: the one object the app holds for the interaction log.

    service = await LogService.open(database_url, home)   # migrate, start the writer child
    service.submit(record)                                 # request path: O(1), never raises
                                                           # (an InteractionRecord or a StoredResponse)
    await service.sync()                                   # read-your-writes barrier
    service.store.get(...)                                 # reads (sync: run them in a thread)
    await service.close()                                  # flush to DB (or spool), stop

The app keeps it on ``app.state.log``; routers reach it through ``request.app.state.log``.
Every insert, fsync and replay runs in a separate writer process (child.py, relayed by
relay.py), so logging costs the serving process only an append and a few µs of encoding.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.log.record import InteractionRecord, StoredResponse
from gateway.log.relay import Relay
from gateway.log.sink import is_transient
from gateway.log.spool import Spool
from gateway.log.writer import spool_folder
from gateway.store import db
from gateway.store.interactions import LogStore

log = logging.getLogger(__name__)

default_database_url = db.default_database_url

SYNC_TIMEOUT_S = 5.0  # while the DB is down a barrier cannot complete; reads go on without it


class LogService:
    def __init__(self, engine: db.sa.Engine, writer: Relay, store: LogStore) -> None:
        self.engine = engine
        self.writer = writer
        self.store = store
        self._closed = False

    @classmethod
    async def open(cls, database_url: str, home: Path, *, queue_size: int = 100_000,
                   batch_size: int = 2000, probe_interval: float = 1.0) -> LogService:
        return await asyncio.to_thread(
            cls.open_sync, database_url, home, queue_size=queue_size,
            batch_size=batch_size, probe_interval=probe_interval,
        )

    @classmethod
    def open_sync(cls, database_url: str, home: Path, *, queue_size: int = 100_000,
                  batch_size: int = 2000, probe_interval: float = 1.0) -> LogService:
        """Blocking variant of ``open`` for scripts and the CLI."""
        engine = db.create_engine(database_url)
        db_up = True
        try:
            db.upgrade(engine)
        except Exception as exc:
            if not is_transient(exc):
                raise  # a broken migration must fail loudly, not look like an outage
            # The gateway must serve even when its log database is away: spool until it is back.
            log.error("log database unavailable at startup (%s); spooling", exc)
            db_up = False  # the child migrates once the database answers
        writer = Relay(database_url, home, Spool(spool_folder(home)), queue_size=queue_size,
                       batch_size=batch_size, probe_interval=probe_interval, db_up=db_up)
        writer.start()  # the child's first pass replays any spool a previous process left
        return cls(engine, writer, LogStore(engine))

    def submit(self, record: InteractionRecord | StoredResponse) -> bool:
        """False only when the record could be neither queued nor spooled (it is lost, and counted)."""
        return self.writer.submit(record)

    async def sync(self, timeout: float = SYNC_TIMEOUT_S) -> bool:
        """Return once every record submitted before this call is committed (True), or after
        ``timeout`` (False: the log is behind, its database slow or away)."""
        if self._closed:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.writer.add_barrier((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            log.warning("log sync timed out after %.1fs (database down?)", timeout)
            return False
        return True

    def sync_blocking(self, timeout: float = SYNC_TIMEOUT_S) -> bool:
        """``sync`` for code without an event loop (tests, scripts)."""
        return asyncio.run(self.sync(timeout))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        self._closed = True
        self.writer.stop()
        self.writer.join()
        self.engine.dispose()
