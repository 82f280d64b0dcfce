"""Per-key limits shared by the worker processes of one host through a SQLite file.

``tuneloop serve --workers N`` without Redis points every worker here (``TUNELOOP_LIMITS_DB``,
a file in TUNELOOP_HOME), so N workers enforce one limit, not N. Admission is one
``BEGIN IMMEDIATE`` transaction (SQLite's write lock: one worker at a time reads the
counters, applies ``ratelimit.over`` and reserves); settling is another. Each worker talks
to the file from one thread of its own so that a wait for the lock never blocks its event
loop. Counters of past windows expire; a concurrency slot whose worker died frees itself
when its lease ends.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from gateway.auth import Principal
from gateway.ratelimit import Ask, Reservation, Usage, headers, key_of, new_slot, over, refusal, windows

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS counters_expires ON counters (expires);
CREATE TABLE IF NOT EXISTS slots (id TEXT PRIMARY KEY, key TEXT NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS slots_key ON slots (key, expires);
"""
UPSERT = ("INSERT INTO counters (name, value, expires) VALUES (?, ?, ?) "
          "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value")


class SqliteLimiter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limits")
        self.db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self.db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # counters, not records: a power cut may lose a few
            db.executescript(SCHEMA)
            self.db = db
        return self.db

    @staticmethod
    def _names(key: str, minute: int, day: str, month: str) -> tuple[str, str, str, str]:
        return f"{key}:r:{minute}", f"{key}:t:{minute}", f"{key}:usd:{day}", f"{key}:usd:{month}"

    def _admit(self, p: Principal, ask: Ask) -> Reservation:
        key, now = key_of(p), time.time()
        minute, day, month, reset = windows(now)
        names = self._names(key, minute, day, month)
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM counters WHERE expires < ?", (now,))
            db.execute("DELETE FROM slots WHERE expires < ?", (now,))
            rows = dict(db.execute(f"SELECT name, value FROM counters WHERE name IN ({','.join('?' * 4)})",
                                   names).fetchall())
            u = Usage(int(rows.get(names[0], 0)), rows.get(names[1], 0.0), rows.get(names[2], 0.0),
                      rows.get(names[3], 0.0))
            if p.limits.get("max_concurrency"):
                u.inflight = db.execute("SELECT count(*) FROM slots WHERE key = ?", (key,)).fetchone()[0]
            if kind := over(p.limits, u, ask):
                db.execute("COMMIT")
                raise refusal(p.limits, kind, u, ask, now)
            db.executemany(UPSERT, [(names[0], 1, now + 120), (names[1], ask.tokens, now + 120),
                                    (names[2], ask.usd, now + 2 * 86400), (names[3], ask.usd, now + 32 * 86400)])
            slot = new_slot(p)
            if slot:
                db.execute("INSERT INTO slots VALUES (?, ?, ?)", (slot, key, now + ask.lease_s))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        u.requests, u.tokens = u.requests + 1, u.tokens + ask.tokens
        u.inflight += bool(slot)
        return Reservation(key, ask, minute, day, month, slot, headers(p.limits, u, reset))

    def _settle(self, res: Reservation, tokens: int, usd: float) -> None:
        now = time.time()
        names = self._names(res.key, res.minute, res.day, res.month)
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(UPSERT, [(names[1], tokens - res.ask.tokens, now + 120),
                                    (names[2], usd - res.ask.usd, now + 2 * 86400),
                                    (names[3], usd - res.ask.usd, now + 32 * 86400)])
            if res.slot:
                db.execute("DELETE FROM slots WHERE id = ?", (res.slot,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    async def admit(self, p: Principal, ask: Ask) -> Reservation:
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._admit, p, ask)

    async def settle(self, res: Reservation, tokens: int, usd: float) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self._settle, res, tokens, usd)

    async def aclose(self) -> None:
        def close() -> None:
            if self.db is not None:
                self.db.close()

        await asyncio.get_running_loop().run_in_executor(self.thread, close)
        self.thread.shutdown(wait=False)
