"""Admin endpoints (admin keys only): API keys, the live routing table, forgetting a user, the audit trail."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import AdminDep
from gateway.errors import NotFound
from gateway.store.audit import AuditStore, actor_of
from gateway.store.forget import forget_user
from gateway.store.keys import KeyStore

router = APIRouter(prefix="/v1/admin")


class KeyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpm: float | None = Field(default=None, gt=0, le=1e9)
    tpm: float | None = Field(default=None, gt=0, le=1e12)
    max_tokens: int | None = Field(default=None, gt=0, le=2**31 - 1)
    usd_per_day: float | None = Field(default=None, gt=0, le=1e9)
    usd_per_month: float | None = Field(default=None, gt=0, le=1e9)
    max_concurrency: int | None = Field(default=None, gt=0, le=1_000_000)


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field(min_length=1, max_length=128)
    name: str | None = None
    admin: bool = False
    limits: KeyLimits = Field(default_factory=KeyLimits)
    expires_in_seconds: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_seconds: float = Field(default=86400, ge=0, le=365 * 86400)


def _keys(request: Request) -> KeyStore:
    return KeyStore(request.app.state.log.engine)


@router.get("/keys")
async def list_keys(request: Request, _: AdminDep, project: str | None = None) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(_keys(request).list, project)}


@router.post("/keys")
async def create_key(body: NewKey, request: Request, who: AdminDep) -> dict[str, Any]:
    key, secret = await asyncio.to_thread(
        _keys(request).create, body.project, name=body.name, admin=body.admin,
        limits=body.limits.model_dump(exclude_none=True), actor=actor_of(who), expires_in_s=body.expires_in_seconds)
    request.app.state.auth.key_created()  # from now on every request needs a key (auth: auto)
    return {**key, "key": secret}  # the only time the secret is shown


@router.post("/keys/{key_id}/rotate")
async def rotate_key(key_id: str, request: Request, who: AdminDep, body: Rotation | None = None) -> dict[str, Any]:
    """A new key with the same project and policy; the old one stays valid for ``grace_seconds``."""
    made = await asyncio.to_thread(_keys(request).rotate, key_id, (body or Rotation()).grace_seconds, actor_of(who))
    if made is None:
        raise NotFound(f"No live API key with id {key_id!r}.")
    request.app.state.auth.evict(key_id)  # its cached expiry changes
    return {**made[0], "key": made[1]}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request, who: AdminDep) -> dict[str, Any]:
    if not await asyncio.to_thread(_keys(request).revoke, key_id, actor_of(who)):
        raise NotFound(f"No live API key with id {key_id!r}.")
    request.app.state.auth.evict(key_id)  # at once here; other replicas within a second
    return {"id": key_id, "object": "api_key.deleted", "deleted": True}


@router.get("/routes")
async def routes(request: Request, _: AdminDep) -> dict[str, Any]:
    cfg = request.app.state.routes.config
    return {"object": "routes", "models": {n: m.model_dump() for n, m in cfg.models.items()},
            "targets": {n: {"kind": t.kind, "base_urls": t.base_urls} for n, t in cfg.targets.items()}}


class Forget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=512)
    project: str | None = Field(default=None, min_length=1, max_length=128)


@router.post("/forget")
async def forget(body: Forget, request: Request, who: AdminDep) -> dict[str, Any]:
    """Erase every interaction whose request names ``user`` (and its feedback); datasets built from them are
    marked stale; the audit trail records it (``gateway/store/forget.py``)."""
    log = request.app.state.log
    await log.sync()  # what is still on its way to the log is erased too
    out = await asyncio.to_thread(forget_user, log.engine, body.user, actor_of(who), body.project)
    return {"object": "user.forgotten", **out}


@router.get("/audit")
async def audit(request: Request, _: AdminDep, limit: int = Query(50, ge=1, le=1000),
                action: str | None = None) -> dict[str, Any]:
    rows = await asyncio.to_thread(AuditStore(request.app.state.log.engine).list, limit, action)
    return {"object": "list", "data": rows}
