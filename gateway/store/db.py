"""Engines and migrations for the log database (SQLite by default, PostgreSQL at scale).

SQLite runs in WAL mode so API reads never block the writer. PostgreSQL goes through
psycopg 3; a plain ``postgresql://`` URL from the user is rewritten to that driver.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def default_database_url(home: Path) -> str:
    return f"sqlite:///{Path(home) / 'tuneloop.db'}"


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


# The database's outage errors, as the drivers and SQLAlchemy raise them (``is_transient`` adds OSError)
OUTAGES: tuple[type[Exception], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError, sqlite3.OperationalError)


def is_transient(exc: BaseException) -> bool:
    """An outage (the database away: retry later), as opposed to a statement or data it refuses."""
    if isinstance(exc, (OSError, *OUTAGES)):
        return True
    psycopg = sys.modules.get("psycopg")  # raw driver errors (COPY paths); only if it is in use
    return psycopg is not None and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    url = normalize_url(url)
    opts: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
        "pool_pre_ping": True,  # connections die with a database restart
    }
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        opts["connect_args"] = {"check_same_thread": False, "timeout": 10}
    else:
        opts["connect_args"] = {"connect_timeout": 3}
        opts["pool_size"] = 4
    opts.update(kwargs)
    engine = sa.create_engine(url, **opts)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def driver_connection(conn: sa.Connection) -> Any:
    """The driver's own connection under ``conn`` (sqlite3 / psycopg), for COPY and server-side cursors."""
    raw = conn.connection.driver_connection
    if raw is None:  # only a pool entry that was invalidated has none
        raise sa.exc.InvalidRequestError("the database connection was invalidated")
    return raw


def _alembic_config(connection: sa.Connection) -> Config:
    from alembic.config import Config  # alembic on first use: processes that never migrate skip its import

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Run ``alembic upgrade`` in-process; a no-op when already at head."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several replicas may start at once: one migrates, the others wait.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7305771)"))
        cfg = _alembic_config(conn)
        current = MigrationContext.configure(conn).get_current_heads()
        heads = ScriptDirectory.from_config(cfg).get_heads()
        if set(current) != set(heads) or revision != "head":
            command.upgrade(cfg, revision)
