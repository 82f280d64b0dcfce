"""Who is calling: ``Authorization: Bearer <key>`` -> a ``Principal`` (key, project, admin).

Auth is on when ``TUNELOOP_AUTH`` (or the config's ``auth``) says ``required``; with the
default ``auto`` it is on whenever the server binds anything but loopback. With auth off
every caller is the ``default`` project's anonymous principal.

Verified keys are cached in-process for ``CACHE_TTL_S`` so the hot path does not touch the
database; a revocation therefore takes effect within that time on every replica.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.log.keys import KeyStore

CACHE_TTL_S = 5.0
MISS_TTL_S = 1.0  # unknown keys are remembered briefly so a flood cannot hammer the DB
DEFAULT_PROJECT = "default"


@dataclass(slots=True, frozen=True)
class Principal:
    key_id: str | None
    project: str
    admin: bool = False
    limits: dict[str, float] = field(default_factory=dict)


ANONYMOUS = Principal(None, DEFAULT_PROJECT, admin=True)


def auth_required(mode: str, host: str) -> bool:
    if mode in ("required", "on"):
        return True
    if mode == "off":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def bearer(value: bytes | str | None) -> str | None:
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    scheme, _, token = text.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    def __init__(self, required: bool, keys: KeyStore | None) -> None:
        self.required = required
        self.keys = keys
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def principal(self, authorization: bytes | str | None) -> Principal:
        if not self.required:
            return ANONYMOUS
        secret = bearer(authorization)
        if secret is None:
            raise AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        now = time.monotonic()
        hit = self._cache.get(secret)
        if hit is None or hit[1] < now:
            found = await asyncio.to_thread(self.keys.lookup, secret) if self.keys else None
            p = None if found is None else Principal(found["id"], found["project"], found["admin"],
                                                      found["limits"])
            hit = (p, now + (CACHE_TTL_S if p else MISS_TTL_S))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[secret] = hit
        if hit[0] is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return hit[0]


def require_admin(p: Principal) -> Principal:
    if not p.admin:
        raise PermissionDenied("This endpoint needs an admin key.")
    return p


def project_of(p: Principal) -> str | None:
    """The project filter for reads: admins and anonymous callers see everything."""
    return None if p.admin else p.project


def principal_from(request: Any) -> Principal:
    return request.state.principal
