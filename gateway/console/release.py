"""Promote and roll back from the console, each with a confirmation page (plain forms: no script needed).

GET  /ui/promote?adapter=ID&alias=A&canary=P   what would change: the alias's routes now and after
POST /ui/promote                               do it: ``gateway.promotion.promote``, the code of ``tuneloop promote``
GET  /ui/rollback?alias=A                      what a rollback restores
POST /ui/rollback                              do it: ``gateway.promotion.rollback`` (``tuneloop rollback``)

The route change is stored in the database (every replica follows within ~2 s) and applied at once on
this one, so the page that follows shows it. Allowed to an admin and to the keys of the project that
owns the alias (its model entry's ``project``); the audit trail names the key.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from gateway import promotion
from gateway.console import render
from gateway.console.adapters import adapter_of, owns
from gateway.console.pages import ConsoleRoute, _context, _go, _log, _posting
from gateway.console.session import Viewer, keep, viewer
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.hotload import HotLoadError
from gateway.reload import apply
from gateway.store.audit import actor_of
from gateway.store.routes import RouteStore

router = APIRouter(route_class=ConsoleRoute)
FAILURES = (promotion.PromotionError, promotion.RouteError, HotLoadError)


def _allowed(request: Request, who: Viewer, alias: str) -> None:
    if not owns(who, request.app.state.routes.config, alias):
        raise PermissionDenied(f"Only an admin or a key of the project that owns '{alias}' may change its routes.")


def _canary(value: str | None) -> float | None:
    text = (value or "").strip()
    try:
        share = float(text) if text else None
    except ValueError:
        share = -1.0
    if share is not None and not 0 < share <= 100:
        raise InvalidRequest("'canary' is a percentage above 0 and at most 100 (empty: all traffic).", param="canary")
    return None if share is None or share >= 100 else share


def _plan(engine: Any, config: Any, adapter: dict[str, Any], alias: str, share: float | None) -> dict[str, Any]:
    """The alias's entry now and after the promotion (as ``promotion.promote`` will write it)."""
    entry = promotion.current_entry(engine, config, alias)
    live = promotion.live_route(entry, exclude=adapter["name"])
    after = ([promotion.adapter_route(adapter, live["target"], 100)] if share is None
             else [{**live, "weight": 100 - share}, promotion.adapter_route(adapter, live["target"], share)])
    return {"before": entry["routes"], "after": after}


async def _page(request: Request, who: Viewer, status: int = 200, **context: Any) -> Response:
    return keep(request, render.page("confirm.html", status, **await _context(request, who), nav="adapters",
                                     **context), who)


@router.get("/promote")
async def confirm_promote(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    query = request.query_params
    alias, share = query.get("alias") or "", _canary(query.get("canary"))
    _allowed(request, who, alias)
    adapter = await adapter_of(request, who, query.get("adapter") or "")
    config = request.app.state.routes.file_config
    try:
        plan = await asyncio.to_thread(_plan, _log(request).engine, config, adapter, alias, share)
    except FAILURES as exc:
        return await _page(request, who, 409, action="promote", alias=alias, adapter=adapter, share=share,
                           plan=None, error=str(exc))
    return await _page(request, who, action="promote", alias=alias, adapter=adapter, share=share, plan=plan,
                       error=None)


@router.post("/promote")
async def promote(request: Request) -> Response:
    who, form = await _posting(request)
    alias, share = form.get("alias") or "", _canary(form.get("canary"))
    _allowed(request, who, alias)
    adapter = await adapter_of(request, who, form.get("adapter") or "")
    routes, engine = request.app.state.routes, _log(request).engine
    try:
        done = await asyncio.to_thread(promotion.promote, engine, routes.file_config, adapter["id"], alias, share,
                                       (form.get("reason") or "").strip() or None, actor=actor_of(who.principal))
    except FAILURES as exc:
        return await _page(request, who, 409, action="promote", alias=alias, adapter=adapter, share=share,
                           plan=None, error=str(exc))
    await _apply(request, engine, "console promote")
    what = f"{done['action']}: {alias} → " + ", ".join(f"{r['model']} {r['weight']:g}%" for r in done["routes"])
    return _go("/ui/adapters?" + urlencode({"done": what}))


@router.get("/rollback")
async def confirm_rollback(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    alias = request.query_params.get("alias") or ""
    _allowed(request, who, alias)
    engine, config = _log(request).engine, request.app.state.routes.file_config
    deployed = await asyncio.to_thread(_deployment, engine, config, alias)
    error = None if deployed else f"Nothing to roll back for '{alias}': no promotion or canary in its history."
    return await _page(request, who, 200 if deployed else 409, action="rollback", alias=alias, adapter=None,
                       share=None, plan=deployed, error=error)


def _deployment(engine: Any, config: Any, alias: str) -> dict[str, Any] | None:
    from gateway.store.workbench import deployment

    row = deployment(engine, alias)
    if row is None:
        return None
    restore = row["restore"] or (config.models[alias].model_dump(exclude_none=True) if alias in config.models
                                 else {"routes": []})
    return {"before": promotion.current_entry(engine, config, alias)["routes"], "after": restore["routes"],
            "row": row}


@router.post("/rollback")
async def rollback(request: Request) -> Response:
    who, form = await _posting(request)
    alias = form.get("alias") or ""
    _allowed(request, who, alias)
    routes, engine = request.app.state.routes, _log(request).engine
    try:
        done = await asyncio.to_thread(promotion.rollback, engine, routes.file_config, alias,
                                       (form.get("reason") or "").strip() or None, actor=actor_of(who.principal))
    except FAILURES as exc:
        return await _page(request, who, 409, action="rollback", alias=alias, adapter=None, share=None,
                           plan=None, error=str(exc))
    await _apply(request, engine, "console rollback")
    what = f"rolled back {alias}: now " + ", ".join(f"{r['model']} {r.get('weight', 1):g}" for r in done["restored"])
    return _go("/ui/adapters?" + urlencode({"done": what}))


async def _apply(request: Request, engine: Any, source: str) -> None:
    """This replica routes as stored now (the others follow within their poll)."""
    routes = request.app.state.routes
    apply(routes, routes.file_config, await asyncio.to_thread(RouteStore(engine).all), source, "database")
