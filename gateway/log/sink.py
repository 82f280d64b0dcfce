"""Batched, idempotent inserts of interaction records (the writer's only SQL).

Both backends use the DB-API connection directly: this is the one hot loop of the
log, and SQLAlchemy's per-row parameter processing would cost more than the insert.
- SQLite: one ``executemany`` of ``INSERT ... ON CONFLICT(id) DO NOTHING`` per batch.
- PostgreSQL: ``COPY`` straight into the table; if a duplicate id aborts it (a replay),
  ``COPY`` into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``
  (COPY alone cannot skip duplicates; replays must be idempotent).

Stored Responses (``StoredResponse``: ``POST /v1/responses`` with ``store``) come in the same batches;
``split`` sorts them out, and their rows go into ``responses`` in the same transaction
(``INSERT ... ON CONFLICT (id) DO NOTHING``: few, and idempotent on replay). They are kept as the
client got them, except that an alias with ``redact_pii`` has PII scrubbed from them as from its
interaction records (a retrieve then returns the scrubbed Response: the promise is that PII is not stored).

A batch holding records of yesterday or older (a spool replayed after an outage) also drops the costs
page's kept days they fall on (``gateway.store.cost_days``), in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from gateway.log.chunks import assemble
from gateway.log.record import InteractionRecord, StoredResponse
from gateway.store import cost_days
from gateway.store.costs import DAY_S
from gateway.store.db import is_transient
from gateway.store.responses import responses
from gateway.store.schema import interactions

__all__ = ["Sink", "is_transient", "split", "to_row"]

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = tuple(c.name for c in interactions.columns)
CREATED = COLUMNS.index("created")
JSON_COLUMNS = frozenset({"request", "response", "error", "metadata"})
RESPONSE_COLUMNS: tuple[str, ...] = tuple(c.name for c in responses.columns)
RESPONSE_JSON = frozenset({"response", "input_items"})
# NOT NULL columns: a dict from an old spool may lack them.
_REQUIRED_DEFAULTS: dict[str, Any] = {
    "requested_model": "", "kind": "primary", "status": 200, "attempts": 1,
    "stream": False, "store": False, "created": 0.0, "object": "chat.completion",
}


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def _scrubber() -> Any:
    from gateway.scrub import Scrubber  # the same rules the dataset builder uses

    return Scrubber()


def _redact(value: Any, scrubber: Any) -> Any:
    if isinstance(value, str):
        return scrubber.text(value)
    if isinstance(value, list):
        return [_redact(v, scrubber) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, scrubber) for k, v in value.items()}
    return value


def to_row(record: InteractionRecord | dict[str, Any]) -> tuple[Any, ...]:
    """One record (dataclass, or dict from the spool) as a tuple in ``COLUMNS`` order.

    A record flagged ``redact_pii`` has PII scrubbed from its request and reply here, in the
    writer process: off the serving path, and before anything reaches the database."""
    get = record.get if isinstance(record, dict) else (lambda k, d=None: getattr(record, k, d))
    assembled: dict[str, Any] = {}
    if chunks := get("chunks", None):  # a relayed stream: its reply is assembled here, off the serving core
        reply, finish = assemble(chunks, get("object", None), str(get("id")), get("created", None))
        assembled = {"response": reply, "finish_reason": finish}
    scrubber = _scrubber() if get("redact_pii", False) else None
    row = []
    for name in COLUMNS:
        value = assembled[name] if name in assembled else get(name, None)
        if scrubber is not None and name in ("request", "response", "error"):
            value = _redact(value, scrubber)
        if name in JSON_COLUMNS:
            value = _json(value)
        elif value is None and name in _REQUIRED_DEFAULTS:
            value = _REQUIRED_DEFAULTS[name]
        row.append(value)
    return tuple(row)


def is_response(record: Any) -> bool:
    """A stored Response rather than an interaction record (a dataclass, or a dict from the spool)."""
    if isinstance(record, dict):
        return record.get("table") == "responses"
    return isinstance(record, StoredResponse)


def response_row(record: StoredResponse | dict[str, Any]) -> tuple[Any, ...]:
    get = record.get if isinstance(record, dict) else (lambda k, d=None: getattr(record, k, d))
    scrubber = _scrubber() if get("redact_pii", False) else None
    return tuple(_json(get(name) if scrubber is None else _redact(get(name), scrubber)) if name in RESPONSE_JSON
                 else get(name) for name in RESPONSE_COLUMNS)


def split(records: Sequence[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A batch as (interaction rows, stored response rows)."""
    rows, stored = [], []
    for record in records:
        if is_response(record):
            stored.append(response_row(record))
        else:
            rows.append(to_row(record))
    return rows, stored


class Sink:
    """Owns one connection from the engine's pool, used only by the writer (in the writer child)."""

    def __init__(self, engine: sa.Engine, prepare: Any = None) -> None:
        self.engine = engine
        self.prepare = prepare  # run once the DB answers (migrations, if startup could not)
        self.dialect = engine.dialect.name
        self._conn: Any = None  # pool proxy; .driver_connection is sqlite3 / psycopg
        self._staged = False
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        mark = "?" if self.dialect == "sqlite" else "%s"
        self._responses_sql = (f"INSERT INTO responses ({', '.join(RESPONSE_COLUMNS)}) VALUES "
                               f"({', '.join(mark for _ in RESPONSE_COLUMNS)}) ON CONFLICT (id) DO NOTHING")
        if self.dialect == "sqlite":
            marks = ", ".join("?" for _ in COLUMNS)
            self._sql = (f"INSERT INTO interactions ({cols}) VALUES ({marks}) "
                         "ON CONFLICT(id) DO NOTHING")
        else:
            self._copy_direct = f"COPY interactions ({cols}) FROM STDIN"
            self._copy = f"COPY _log_stage ({cols}) FROM STDIN"
            self._merge = (
                f"INSERT INTO interactions ({cols}) SELECT {cols} FROM _log_stage "
                "ON CONFLICT (id) DO NOTHING"
            )

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.engine.raw_connection()
            self._staged = False
        return self._conn

    def insert(self, rows: Sequence[tuple[Any, ...]], stored: Sequence[tuple[Any, ...]] = ()) -> None:
        """Commit ``rows`` (already ``to_row``'d) and ``stored`` (stored responses' rows) in one
        transaction; duplicates by id are skipped."""
        if not rows and not stored:
            return
        conn = self._connection()
        try:
            driver = conn.driver_connection
            if self.dialect == "sqlite":
                if rows:
                    driver.executemany(self._sql, rows)
                if stored:
                    driver.executemany(self._responses_sql, stored)
            else:
                if rows:
                    self._insert_pg(driver, rows)
                if stored:
                    with driver.cursor() as cur:
                        cur.executemany(self._responses_sql, stored)
            if rows and min(r[CREATED] for r in rows) < (cost_days.first_open_day() + 1) * DAY_S:
                self._late(driver, rows)
            conn.commit()
        except BaseException:
            self.reset()
            raise

    def _late(self, driver: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Records of yesterday or older (a replayed spool): the costs page's kept days they fall on go."""
        cur = driver.cursor()
        try:
            for sql in cost_days.invalidate_sql(self.dialect, cost_days.late_days(r[CREATED] for r in rows)):
                cur.execute(sql)
        finally:
            cur.close()

    def _insert_pg(self, pg: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        import psycopg  # loaded already (``pg`` is its connection); not imported by a writer on SQLite

        # Fast path: COPY straight into the table. A duplicate id (a replay of a batch
        # whose commit was not acknowledged) aborts it; then merge through the stage.
        try:
            with pg.cursor() as cur, cur.copy(self._copy_direct) as copy:
                for row in rows:
                    copy.write_row(row)
            return
        except psycopg.errors.UniqueViolation:
            pg.rollback()
        with pg.cursor() as cur:
            if not self._staged:
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS _log_stage "
                    "(LIKE interactions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                self._staged = True
            with cur.copy(self._copy) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(self._merge)

    def ping(self) -> bool:
        try:
            conn = self._connection()
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            cur.close()
            conn.rollback()
            if self.prepare is not None:
                self.prepare()
                self.prepare = None
            return True
        except Exception as exc:
            if not is_transient(exc):
                log.exception("log database answered but could not be prepared")
            self.reset()
            return False

    def reset(self) -> None:
        """Throw the connection away (it may be dead after an outage)."""
        if self._conn is not None:
            try:
                self._conn.invalidate()
            except Exception:
                pass
            self._conn = None
            self._staged = False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
