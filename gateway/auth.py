"""Who is calling: ``Authorization: Bearer <key>`` -> a ``Principal`` (key, project, admin).

Modes (``TUNELOOP_AUTH`` or the config's ``auth:``; the default is ``auto``):

- ``required`` (also ``on``): every request needs a live key.
- ``auto``: off loopback, the same as ``required``. On loopback, as soon as the database
  holds any API key (live or revoked) every request needs one too; with no key at all,
  callers are the ``default`` project's ``ANONYMOUS`` principal, which is *not* an admin
  (the first key is created with ``tuneloop keys create`` on the command line).
- ``off`` (also ``none``): only when set explicitly. Every caller is ``OPERATOR``, an
  admin; start-up says so with a warning.

Anonymous is never admin unless auth was turned off on purpose. Whether any key exists is
cached for ``KEYS_EXIST_TTL_S`` and set at once when this process creates a key.

Revocation: the replica that revokes a key (``DELETE /v1/admin/keys/{id}``) evicts it from
its cache at once. Other replicas, and revocations made with ``tuneloop keys revoke``,
take effect within ``KEY_TTL_S`` (1 s): a verified key is trusted from the cache for that
long, then looked up again. That costs one indexed lookup (``api_keys.key_hash`` is unique)
per key per second per replica, and works alike on SQLite and PostgreSQL, with or without
Redis, which is why it was chosen over LISTEN/NOTIFY or pub/sub.

The database away: a key verified before the outage is trusted from the cache for up to
``STALE_S`` (an hour) more, with one warning, so serving goes on while the log spools; a key
not seen before cannot be checked and gets 503 ``database_unavailable`` (retry-after), never
a 401 or a 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import AuthenticationFailed, DatabaseUnavailable, PermissionDenied
from gateway.store.db import is_transient
from gateway.store.keys import KeyStore

log = logging.getLogger("tuneloop.auth")

KEY_TTL_S = 1.0  # how long a verified key is trusted without asking the database again
MISS_TTL_S = 1.0  # unknown keys are remembered briefly so a flood cannot hammer the DB
KEYS_EXIST_TTL_S = 1.0  # how long "the database holds no key" is believed
STALE_S = 3600.0  # while the database is away, how long a key verified before is still trusted
DEFAULT_PROJECT = "default"
MODES = {"auto": "auto", "required": "required", "on": "required", "off": "off", "none": "off"}


@dataclass(slots=True, frozen=True)
class Principal:
    key_id: str | None
    project: str
    admin: bool = False
    limits: dict[str, float] = field(default_factory=dict)


ANONYMOUS = Principal(None, DEFAULT_PROJECT, admin=False)  # loopback, no key in the database
OPERATOR = Principal(None, DEFAULT_PROJECT, admin=True)  # auth explicitly off


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def resolve_mode(mode: str | bool | None, host: str) -> str:
    """``required``, ``auto`` (loopback: keys decide) or ``off``; unknown modes are an error."""
    if isinstance(mode, bool):  # YAML reads a bare ``off``/``on`` as a boolean
        mode = "required" if mode else "off"
    name = MODES.get(str(mode or "auto").strip().lower())
    if name is None:
        raise ValueError(f"unknown auth mode {mode!r}: use auto, required or off")
    if name == "auto" and not is_loopback(host):
        return "required"
    return name


def bearer(value: bytes | str | None) -> str | None:
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    scheme, _, token = text.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    def __init__(self, mode: str, keys: KeyStore | None = None) -> None:
        self.mode = mode  # as resolve_mode returns it
        self.keys = keys
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        self._any_key: bool | None = None
        self._any_key_task: asyncio.Future[bool] | None = None
        self._created = 0  # a read of "any key?" that overlapped this process creating one is not kept
        self._evictions = 0  # a lookup that overlapped an eviction is not cached
        self._any_key_until = 0.0
        self._stale_warned = False  # said once per outage
        self._verified: dict[str, float] = {}  # secret -> when the database last answered for it

    async def start(self, keys: KeyStore) -> None:
        """Attach the key store and say the mode at start-up (one INFO line; a WARNING when off)."""
        self.keys = keys
        try:
            exist = await self.keys_exist() if self.mode == "auto" else False
        except Exception as exc:  # the database may come later; requests will ask again
            log.warning("auth: %s; cannot read the API keys yet (%s): every request needs a key until "
                        "they can be read", self.mode, exc)
            return
        log.info(self.describe(exist))
        if self.mode == "off":
            log.warning("auth is OFF (set explicitly): anyone who can reach this port is an admin: "
                        "they can read every project's data and create API keys")

    @property
    def required(self) -> bool:
        """Whether a request's principal comes from ``principal()`` (False: auth is off)."""
        return self.mode != "off"

    async def principal(self, authorization: bytes | str | None) -> Principal:
        if self.mode == "off":
            return OPERATOR
        secret = bearer(authorization)
        if self.mode == "auto" and not await self.keys_exist():
            # No key was known a moment ago: the caller is anonymous (an SDK sends some bearer anyway), unless
            # its bearer is a key made since, by another process (`tuneloop keys create`): then keys exist.
            found = await self._known(secret) if secret is not None else None
            if found is None:
                return ANONYMOUS
            self.key_created()
            return found
        if secret is None:
            raise AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        found = await self._known(secret)
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return found

    async def _known(self, secret: str) -> Principal | None:
        """The key's principal, from the cache while it is fresh, else from the database."""
        hit = self._cache.get(secret)
        return hit[0] if hit is not None and hit[1] >= time.monotonic() else await self._lookup(secret)

    async def _lookup(self, secret: str) -> Principal | None:
        """One database lookup per secret at a time, however many requests wait for it (in a
        task of its own, so a caller that goes away does not cancel it for the others)."""
        task = self._inflight.get(secret)
        if task is None:
            task = self._inflight[secret] = asyncio.ensure_future(self._fetch(secret))
            task.add_done_callback(lambda _: self._inflight.pop(secret, None))
        return await asyncio.shield(task)

    async def _fetch(self, secret: str) -> Principal | None:
        evictions = self._evictions
        try:
            row = await asyncio.to_thread(self.keys.lookup, secret) if self.keys else None
        except Exception as exc:
            if not is_transient(exc):
                raise
            return self._stale(secret, exc)
        self._stale_warned = False
        p = None if row is None else Principal(row["id"], row["project"], row["admin"], row["limits"])
        if len(self._cache) > 10_000:
            self._cache.clear()
            self._verified.clear()
        if evictions == self._evictions:
            self._cache[secret] = (p, time.monotonic() + (KEY_TTL_S if p else MISS_TTL_S))
            self._verified[secret] = time.monotonic()
        return p

    def _stale(self, secret: str, exc: Exception) -> Principal:
        """The database did not answer: the key as last verified, if that was a key and recent enough."""
        hit, now = self._cache.get(secret), time.monotonic()
        if hit is None or hit[0] is None or now - self._verified.get(secret, -STALE_S) > STALE_S:
            raise DatabaseUnavailable("API keys cannot be checked right now (the database is unreachable); "
                                      "retry shortly.") from exc
        if not self._stale_warned:
            self._stale_warned = True
            log.warning("auth: the database is unreachable (%s); keys verified before are trusted for up to "
                        "%.0f s meanwhile, new keys get 503", exc, STALE_S)
        self._cache[secret] = (hit[0], now + KEY_TTL_S)  # ask again in a second, not on every request
        return hit[0]

    async def keys_exist(self) -> bool:
        """Whether the database holds any API key (cached briefly; unknown and unreadable: yes). One read
        at a time, however many requests find the answer stale (in a task of its own, as ``_lookup``)."""
        if self._any_key is not None and time.monotonic() < self._any_key_until:
            return self._any_key
        if self.keys is None:
            return True
        task = self._any_key_task
        if task is None:
            task = self._any_key_task = asyncio.ensure_future(self._read_any_key())
            task.add_done_callback(self._read_done)
        return await asyncio.shield(task)

    def _read_done(self, task: asyncio.Future[bool]) -> None:
        self._any_key_task = None
        if not task.cancelled():
            task.exception()  # retrieved here too: a read no request awaited any more is not "never retrieved"

    async def _read_any_key(self) -> bool:
        assert self.keys is not None
        created = self._created
        try:
            found = await asyncio.to_thread(self.keys.any)
        except Exception as exc:
            if self._any_key is None:
                raise DatabaseUnavailable() from exc
            self._any_key_until = time.monotonic() + KEY_TTL_S  # ask again in a second, not on every request
            return self._any_key  # keep what we knew while the database is away
        if created != self._created:
            return True  # this process made a key while the read was on its way: that answer stands
        self._any_key, self._any_key_until = found, time.monotonic() + KEYS_EXIST_TTL_S
        return found

    def key_created(self) -> None:
        """This process created a key: from now on every request needs one (``auto``)."""
        self._created += 1
        self._any_key, self._any_key_until = True, time.monotonic() + KEYS_EXIST_TTL_S

    def evict(self, key_id: str) -> None:
        """Forget a revoked key at once (other replicas notice within ``KEY_TTL_S``)."""
        self._evictions += 1
        for secret, (p, _) in list(self._cache.items()):
            if p is not None and p.key_id == key_id:
                del self._cache[secret]

    def describe(self, keys_exist: bool) -> str:
        if self.mode == "off":
            return "auth: off (set explicitly): every caller is an admin"
        if self.mode == "required":
            return "auth: required: every request needs an API key"
        if keys_exist:
            return "auth: auto on loopback: the database holds API keys, so every request needs one"
        return ("auth: auto on loopback: no API keys yet, so callers without one are project "
                f"{DEFAULT_PROJECT!r} without admin rights; once `tuneloop keys create` makes one, "
                "every request needs a key")


def require_admin(p: Principal) -> Principal:
    if not p.admin:
        raise PermissionDenied("This endpoint needs an admin key.")
    return p


def project_of(p: Principal) -> str | None:
    """The project filter for reads: admins see everything, everyone else their own project."""
    return None if p.admin else p.project


def principal_from(request: Any) -> Principal:
    return request.state.principal
