"""Admin, ``/ui/admin`` (admin keys and the local admin only; anyone else gets a 403 page): API keys and projects.

GET  /ui/admin                         the keys (id, project, name, limits, created, expires, state), the
                                       create form, the projects
POST /ui/admin/keys                    create a key with limits: the page that answers shows the new key,
                                       once (it is in no URL, no cookie, and stored only as a hash)
POST /ui/admin/keys/{id}/rotate        a new key like it (shown once); the old one lives ``grace_hours`` more
GET  /ui/admin/keys/{id}/revoke        "are you sure?"   POST: revoke it

Through the same code as ``tuneloop keys`` and ``/v1/admin/keys``: gateway.store.keys.KeyStore (with the audit
trail naming this admin), the admin API's own validation (``NewKey``), and the authenticator told at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from gateway.api.admin import NewKey, Rotation
from gateway.console import render
from gateway.console.pages import ConsoleRoute, _context, _go, _log, _posting
from gateway.console.session import Viewer, keep, viewer
from gateway.errors import NotFound, PermissionDenied
from gateway.store import sessions
from gateway.store.audit import actor_of
from gateway.store.keys import KeyStore

router = APIRouter(route_class=ConsoleRoute)
LIMITS = {"rpm": "requests / minute", "tpm": "tokens / minute", "max_tokens": "max_tokens per request",
          "usd_per_day": "USD / day", "usd_per_month": "USD / month", "max_concurrency": "requests at once"}


def _admin_only(request: Request, who: Viewer) -> None:
    request.state.viewer = who
    if not who.principal.admin:
        raise PermissionDenied("The admin pages are for admin keys only.")


def _keys(request: Request) -> KeyStore:
    return KeyStore(_log(request).engine)


def state(key: dict[str, Any], now: float | None = None) -> str:
    if key["revoked"]:
        return "revoked"
    return "expired" if key["expires"] and key["expires"] <= (now or time.time()) else "live"


async def _page(request: Request, who: Viewer, *, status: int = 200, **extra: Any) -> Response:
    context = await _context(request, who)
    keys = await asyncio.to_thread(_keys(request).list, None)
    now = time.time()
    for key in keys:
        key["state"] = state(key, now)
    known = await asyncio.to_thread(sessions.projects, _log(request).engine)
    projects = [{"name": p, "live": sum(k["project"] == p and k["state"] == "live" for k in keys),
                 "all": sum(k["project"] == p for k in keys)} for p in sorted({*known, *(k["project"] for k in keys)})]
    extra = {"new_key": None, "made": None, "error": None, "notice": None, "form": {}, "rotated": None, **extra}
    return render.page("admin.html", status, **context, keys=list(reversed(keys)), project_rows=projects,
                       limit_names=LIMITS, **extra)


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    _admin_only(request, who)
    revoked = request.query_params.get("revoked")
    return keep(request, await _page(request, who, notice=f"Revoked {revoked}." if revoked else None), who)


def new_key(form: dict[str, str]) -> NewKey:
    """The admin API's body from the form (empty fields: no limit); pydantic's ValidationError if out of range."""
    limits = {k: form[k].strip() for k in LIMITS if (form.get(k) or "").strip()}
    days = (form.get("expires_in_days") or "").strip()
    return NewKey.model_validate({"project": (form.get("project") or "").strip(),
                                  "name": (form.get("name") or "").strip() or None, "admin": form.get("admin") == "on",
                                  "limits": limits, "expires_in_seconds": float(days) * 86400 if days else None})


def _problem(exc: ValidationError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'limits')}: {e['msg']}" for e in exc.errors())
    return "The expiry is a number of days."


@router.post("/admin/keys")
async def create(request: Request) -> Response:
    who, form = await _posting(request)
    _admin_only(request, who)
    try:
        body = new_key(form)
    except (ValidationError, ValueError) as exc:
        return await _page(request, who, status=400, error=f"Not created: {_problem(exc)}", form=form)
    key, secret = await asyncio.to_thread(
        _keys(request).create, body.project, name=body.name, admin=body.admin,
        limits=body.limits.model_dump(exclude_none=True), actor=actor_of(who.principal),
        expires_in_s=body.expires_in_seconds)
    request.app.state.auth.key_created()  # as the admin API: from now on every request needs a key (auth: auto)
    return await _page(request, who, new_key=secret, made=key)


@router.post("/admin/keys/{key_id}/rotate")
async def rotate(key_id: str, request: Request) -> Response:
    who, form = await _posting(request)
    _admin_only(request, who)
    try:
        grace = Rotation(grace_seconds=float(form.get("grace_hours") or 24) * 3600).grace_seconds
    except (ValidationError, ValueError) as exc:
        return await _page(request, who, status=400, error=f"Not rotated: {_problem(exc)}")
    made = await asyncio.to_thread(_keys(request).rotate, key_id, grace, actor_of(who.principal))
    if made is None:
        raise NotFound(f"No live API key with id {key_id!r}.")
    request.app.state.auth.evict(key_id)  # its cached expiry changes
    return await _page(request, who, new_key=made[1], made=made[0], rotated=key_id)


@router.get("/admin/keys/{key_id}/revoke")
async def confirm_revoke(key_id: str, request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    _admin_only(request, who)
    context = await _context(request, who)
    key = next((k for k in await asyncio.to_thread(_keys(request).list, None) if k["id"] == key_id), None)
    if key is None or key["revoked"]:
        raise NotFound(f"No live API key with id {key_id!r}.")
    return keep(request, render.page("revoke.html", **context, key=key, limit_names=LIMITS), who)


@router.post("/admin/keys/{key_id}/revoke")
async def revoke(key_id: str, request: Request) -> Response:
    who, _ = await _posting(request)
    _admin_only(request, who)
    if not await asyncio.to_thread(_keys(request).revoke, key_id, actor_of(who.principal)):
        raise NotFound(f"No live API key with id {key_id!r}.")
    request.app.state.auth.evict(key_id)  # at once here; other replicas within a second
    return _go(f"/ui/admin?revoked={quote(key_id)}")
