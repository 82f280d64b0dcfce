"""What a text index would cost the log writer: the writer's own insert (SQLite ``executemany``, PostgreSQL
``COPY``, batches of 512, ~2 KB records from tests/log/records.py) into the migrated schema, with no text
index, then with each candidate index, in one run (loadtests/console_bench.py prints it; run alone with
``.venv/bin/python loadtests/text_index_cost.py``).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.store import db  # noqa: E402
from gateway.store.schema import interactions  # noqa: E402
from tests.log.records import make_record  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
COLUMNS = tuple(c.name for c in interactions.columns)
_FTS = "CREATE VIRTUAL TABLE fts USING fts5(request, response, content='', tokenize='{}')"
_FEED = ("CREATE TRIGGER fts_in AFTER INSERT ON interactions BEGIN INSERT INTO fts(rowid, request, response) "
         "VALUES (new.rowid, {}, {}); END")
_TEXT = ("(SELECT group_concat(json_extract(value, '$.content'), char(10)) FROM json_each(new.request, '$.messages'))",
         "(SELECT group_concat(json_extract(value, '$.message.content'), char(10)) "
         "FROM json_each(new.response, '$.choices'))")
SQLITE = {
    "none": [],
    "FTS5 trigram, request + reply JSON": [_FTS.format("trigram"), _FEED.format("new.request", "new.response")],
    "FTS5 trigram, message texts only": [_FTS.format("trigram"), _FEED.format(*_TEXT)],
    "FTS5 words (unicode61), message texts only": [_FTS.format("unicode61"), _FEED.format(*_TEXT)],
}
_SEARCHED = "(coalesce(request::text, '') || chr(10) || coalesce(response::text, ''))"
POSTGRES = {
    "none": [],
    "pg_trgm GIN, request + reply JSON": ["CREATE EXTENSION IF NOT EXISTS pg_trgm",
                                         f"CREATE INDEX ix_text ON interactions USING gin ({_SEARCHED} gin_trgm_ops)"],
    "tsvector GIN ('simple'), request + reply JSON": [
        f"CREATE INDEX ix_text ON interactions USING gin (to_tsvector('simple', {_SEARCHED}))"],
}


def _rows(n: int) -> list[tuple[object, ...]]:
    from gateway.log.sink import to_row  # the writer's own row encoding

    return [to_row(make_record(i)) for i in range(n)]


def sqlite_cost(rows: list[tuple[object, ...]]) -> dict[str, float]:
    out = {}
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    sql = f"INSERT INTO interactions ({cols}) VALUES ({', '.join('?' for _ in COLUMNS)}) ON CONFLICT(id) DO NOTHING"
    for name, ddl in SQLITE.items():
        with tempfile.TemporaryDirectory() as home:
            path = f"{home}/t.db"
            engine = db.create_engine(f"sqlite:///{path}")
            db.upgrade(engine)
            engine.dispose()
            con = sqlite3.connect(path)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            for statement in ddl:
                con.execute(statement)
            con.commit()
            t0 = time.perf_counter()
            for i in range(0, len(rows), 512):
                con.executemany(sql, rows[i:i + 512])
                con.commit()
            out[name] = len(rows) / (time.perf_counter() - t0)
            con.close()
    return out


def postgres_cost(rows: list[tuple[object, ...]]) -> dict[str, float]:
    out = {}
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    for name, ddl in POSTGRES.items():
        dbname = f"tuneloop_ixcost_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        try:
            url = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
            engine = db.create_engine(url)
            db.upgrade(engine)
            engine.dispose()
            with psycopg.connect(url) as con:
                for statement in ddl:
                    con.execute(statement)
                con.commit()
                t0 = time.perf_counter()
                for i in range(0, len(rows), 512):
                    with con.cursor() as cur, cur.copy(f"COPY interactions ({cols}) FROM STDIN") as copy:
                        for row in rows[i:i + 512]:
                            copy.write_row(row)
                    con.commit()
                out[name] = len(rows) / (time.perf_counter() - t0)
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return out


def table(n: int = 20_000, backends: tuple[str, ...] = ("sqlite", "postgres")) -> str:
    rows = _rows(n)
    lines = [f"| database | text index ({n:,} records, batches of 512) | records/s | × without |",
             "|---|---|---:|---:|"]
    for backend in backends:
        rates = sqlite_cost(rows) if backend == "sqlite" else postgres_cost(rows)
        for name, rate in rates.items():
            lines.append(f"| {backend} | {name} | {rate:,.0f} | {rate / rates['none']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(table() + f"\n(load average {os.getloadavg()[0]:.1f})\n")
