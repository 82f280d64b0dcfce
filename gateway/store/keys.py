"""API keys: stored as SHA-256 hashes (keys are 240-bit random, so a fast hash is enough).

The ``limits`` JSON column holds the key's policy: ``admin`` (bool) and its limits
(``rpm``, ``tpm``, ``max_tokens``, ``usd_per_day``, ``usd_per_month``).  A key may expire
(``expires``); ``rotate`` makes a new key with the same project and policy and lets the old one
live for a grace period. Creation, rotation and revocation go to the audit trail.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import sqlalchemy as sa

from gateway.store.audit import cli_actor, record
from gateway.store.schema import api_keys as t

KEY_PREFIX = "tl-"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(row: Any) -> dict[str, Any]:
    policy = dict(row.limits or {})
    return {"id": row.id, "object": "api_key", "project": row.project, "name": row.name,
            "prefix": row.prefix, "created": int(row.created), "revoked": row.revoked is not None,
            "expires": int(row.expires) if row.expires else None,
            "admin": bool(policy.pop("admin", False)), "limits": policy}


class KeyStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, project: str, *, name: str | None = None, admin: bool = False,
               limits: dict[str, float] | None = None, actor: str | None = None,
               expires_in_s: float | None = None) -> tuple[dict[str, Any], str]:
        """A new key; the secret is returned once and never stored.  ``actor``: who (the audit trail;
        default: the command line's user)."""
        with self.engine.begin() as conn:
            return _insert(conn, project, name, admin, limits or {}, actor or cli_actor(),
                           time.time() + expires_in_s if expires_in_s else None)

    def lookup(self, secret: str) -> dict[str, Any] | None:
        """The live key for ``secret``, or None (unknown, revoked or expired)."""
        q = sa.select(t).where(t.c.key_hash == hash_key(secret), _live())
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else _row(row)

    def revoke(self, key_id: str, actor: str | None = None) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(t.update().where(t.c.id == key_id, t.c.revoked.is_(None))
                               .values(revoked=time.time()))
            if res.rowcount > 0:
                record(conn, actor or cli_actor(), "key.revoke", key_id)
        return res.rowcount > 0

    def rotate(self, key_id: str, grace_s: float, actor: str | None = None) -> tuple[dict[str, Any], str] | None:
        """A new key like ``key_id`` (project, name, policy, expiry); the old one expires in ``grace_s``
        seconds (sooner if it already would), in one transaction. None: no live key ``key_id``."""
        now, actor = time.time(), actor or cli_actor()
        with self.engine.begin() as conn:
            old = conn.execute(sa.select(t).where(t.c.id == key_id, _live(now))).first()
            if old is None:
                return None
            policy = dict(old.limits or {})
            admin = bool(policy.pop("admin", False))
            new, secret = _insert(conn, old.project, old.name, admin, policy, actor, old.expires)
            conn.execute(t.update().where(t.c.id == key_id).values(expires=min(old.expires or now + grace_s,
                                                                               now + grace_s)))
            record(conn, actor, "key.rotate", key_id, {"new": new["id"], "grace_s": grace_s})
        return new, secret

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(t).order_by(t.c.created)
        if project is not None:
            q = q.where(t.c.project == project)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]

    def any(self) -> bool:
        """Whether any key was ever created (revoked ones count: auth stays on once used)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.c.id).limit(1)).first() is not None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()


def _live(now: float | None = None) -> Any:
    """A key that is neither revoked nor expired (at ``now``)."""
    return sa.and_(t.c.revoked.is_(None), sa.or_(t.c.expires.is_(None), t.c.expires > (now or time.time())))


def _insert(conn: sa.Connection, project: str, name: str | None, admin: bool, limits: dict[str, float],
            actor: str, expires: float | None) -> tuple[dict[str, Any], str]:
    secret = KEY_PREFIX + secrets.token_urlsafe(30)
    row = {"id": "key_" + secrets.token_hex(8), "project": project, "name": name, "key_hash": hash_key(secret),
           "prefix": secret[:8], "created": time.time(), "revoked": None, "limits": {**limits, "admin": admin},
           "expires": expires}
    conn.execute(t.insert().values(**row))
    record(conn, actor, "key.create", str(row["id"]), {"project": project, "admin": admin})
    return _row(_Obj(row)), secret


class _Obj:
    """Attribute access over a dict, so a freshly inserted row renders like a fetched one."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)
