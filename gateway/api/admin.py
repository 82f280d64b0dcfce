"""Admin endpoints (admin keys only): API keys and the live routing table."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import AdminDep
from gateway.errors import NotFound
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


def _keys(request: Request) -> KeyStore:
    return KeyStore(request.app.state.log.engine)


@router.get("/keys")
async def list_keys(request: Request, _: AdminDep, project: str | None = None) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(_keys(request).list, project)}


@router.post("/keys")
async def create_key(body: NewKey, request: Request, _: AdminDep) -> dict[str, Any]:
    key, secret = await asyncio.to_thread(
        _keys(request).create, body.project, name=body.name, admin=body.admin,
        limits=body.limits.model_dump(exclude_none=True))
    request.app.state.auth.key_created()  # from now on every request needs a key (auth: auto)
    return {**key, "key": secret}  # the only time the secret is shown


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request, _: AdminDep) -> dict[str, Any]:
    if not await asyncio.to_thread(_keys(request).revoke, key_id):
        raise NotFound(f"No live API key with id {key_id!r}.")
    request.app.state.auth.evict(key_id)  # at once here; other replicas within a second
    return {"id": key_id, "object": "api_key.deleted", "deleted": True}


@router.get("/routes")
async def routes(request: Request, _: AdminDep) -> dict[str, Any]:
    cfg = request.app.state.routes.config
    return {"object": "routes", "models": {n: m.model_dump() for n, m in cfg.models.items()},
            "targets": {n: {"kind": t.kind, "base_urls": t.base_urls} for n, t in cfg.targets.items()}}
