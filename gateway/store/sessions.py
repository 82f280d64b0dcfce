"""The console's sign-in sessions (``/ui/``): one row per signed-in browser.

The cookie carries a random id (256 bits); the table keeps only its SHA-256, so reading the
database gives nobody a usable session. A session names the API key it was opened with by its id
(the key itself is never stored, nor sent back to the browser), and every read joins that key, so
revoking or expiring the key ends its sessions at once. ``key_id`` None: a session opened while the
gateway asks for no key (auth off, or loopback before the first key); it is worth nothing once a key
is needed. Each session has its own CSRF token, and ``project`` is the one an admin chose to look
at (None: every project). Sessions last ``LIFETIME_S``; expired rows go when a new session starts.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from gateway.store.keys import _live, _row
from gateway.store.schema import api_keys, metadata

LIFETIME_S = 12 * 3600.0

console_sessions = sa.Table(
    "console_sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),  # SHA-256 of the cookie's random id
    sa.Column("key_id", sa.String(64)),  # the API key signed in with (None: no key was needed)
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("project", sa.String(128)),  # an admin's chosen project (None: all)
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.Index("ix_console_sessions_expires", "expires"),
)
t = console_sessions


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    csrf: str
    project: str | None  # an admin's chosen project
    key: dict[str, Any] | None  # the live key's row (gateway.store.keys), None for a keyless session


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start(engine: sa.Engine, key_id: str | None) -> str:
    """A new session for ``key_id``; returns the id for the cookie (shown nowhere else)."""
    session_id, now = secrets.token_urlsafe(32), time.time()
    with engine.begin() as conn:
        conn.execute(t.delete().where(t.c.expires < now))
        conn.execute(t.insert().values(id_hash=_digest(session_id), key_id=key_id, csrf=secrets.token_urlsafe(32),
                                       project=None, created=now, expires=now + LIFETIME_S))
    return session_id


def load(engine: sa.Engine, session_id: str) -> ConsoleSession | None:
    """The live session with this id, or None (unknown, expired, or its key revoked or expired)."""
    session = (t.c.key_id.label("s_key_id"), t.c.csrf.label("s_csrf"), t.c.project.label("s_project"))
    q = (sa.select(*session, *api_keys.c)
         .select_from(t.outerjoin(api_keys, sa.and_(api_keys.c.id == t.c.key_id, _live())))
         .where(t.c.id_hash == _digest(session_id), t.c.expires > time.time()))
    with engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None or (row.s_key_id is not None and row.id is None):
        return None
    return ConsoleSession(row.s_csrf, row.s_project, None if row.s_key_id is None else _row(row))


def choose_project(engine: sa.Engine, session_id: str, project: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.id_hash == _digest(session_id)).values(project=project))


def end(engine: sa.Engine, session_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(t.delete().where(t.c.id_hash == _digest(session_id)))


def projects(engine: sa.Engine) -> list[str]:
    """The projects an admin may switch to: every project that has an API key, and ``default``."""
    with engine.connect() as conn:
        found = set(conn.execute(sa.select(api_keys.c.project).distinct()).scalars())
    return sorted(found | {"default"})
