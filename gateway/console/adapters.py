"""Adapters and routes, ``/ui/adapters``: each alias's routes and weights, its canary's progress with the arms'
statistics, and the adapter versions with their lineage and evaluation.

GET  /ui/adapters                 the aliases (routes, weights, the deployment a rollback would undo, canary
                                  progress: gateway.store.canary.arm_stats since the canary began) and versions
GET  /ui/adapters/{id}            one version: lineage (adapter -> job -> dataset -> interactions), its eval
                                  report, the aliases it may be promoted on
GET  /ui/adapters/{id}/plot       the eval report's plot (a PNG the evaluation saved), when there is one

Promotion and rollback, with their confirmation step, are ``gateway.console.release``. A project key sees
the aliases its project owns (the model entry's ``project``) and the adapters of its project's jobs; an
admin everything (or the project chosen).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.config import GatewayConfig
from gateway.console import render
from gateway.console.pages import ConsoleRoute, _context, _go, _log
from gateway.console.session import Viewer, keep, viewer
from gateway.errors import NotFound
from gateway.loop_settings import LoopSettings
from gateway.promotion import RouteError, current_entry
from gateway.store import workbench
from gateway.store.canary import arm_stats

router = APIRouter(route_class=ConsoleRoute)


def owns(who: Viewer, config: GatewayConfig, alias: str) -> bool:
    """May ``who`` promote and roll back ``alias``: an admin, or a key of the project that owns it."""
    model = config.models.get(alias)
    return model is not None and (who.principal.admin or model.project == who.principal.project)


def aliases(who: Viewer, config: GatewayConfig) -> list[str]:
    """The aliases shown: a project's own (an admin: the chosen project's, or every one)."""
    return sorted(a for a, m in config.models.items() if who.project is None or m.project == who.project)


def alias_view(engine: Any, request: Request, alias: str) -> dict[str, Any]:
    """One alias as the page shows it (synchronous: run it in a thread)."""
    routes = request.app.state.routes
    model = routes.config.models[alias]
    try:
        entry = current_entry(engine, routes.file_config, alias)
    except RouteError:
        entry = model.model_dump(exclude_none=True)
    total = sum(r.get("weight", 1.0) for r in entry["routes"]) or 1.0
    shares = [{**r, "share": 100 * r.get("weight", 1.0) / total} for r in entry["routes"]]
    deployed = workbench.deployment(engine, alias)
    out: dict[str, Any] = {"alias": alias, "owner": model.project, "routes": shares, "deployment": deployed,
                           "canary": None}
    if deployed and deployed["action"] == "canary":
        settings = (routes.config.loop.get(alias) or LoopSettings()).canary
        arms = arm_stats(engine, alias, deployed["created"], projects=model.training_projects())
        names = workbench.names(engine, [deployed["adapter_id"]] if deployed["adapter_id"] else [])
        candidate = names.get(deployed["adapter_id"] or "", "").split(":")[0]
        least = min((a["requests"] for a in arms.values()), default=0) if len(arms) > 1 else 0
        rated = min((a["ratings"] for a in arms.values()), default=0) if len(arms) > 1 else 0
        out["canary"] = {
            "since": deployed["created"], "candidate": candidate, "arms": arms, "settings": settings,
            "requests_progress": min(1.0, least / settings.min_requests) if settings.min_requests else 1.0,
            "ratings_progress": min(1.0, rated / settings.min_ratings) if settings.min_ratings else 1.0,
            "elapsed_s": time.time() - deployed["created"]}
    out["history"] = workbench.history(engine, alias, 6)
    out["names"] = workbench.names(engine, [h["adapter_id"] for h in out["history"] if h["adapter_id"]])
    return out


@router.get("/adapters")
async def adapters_page(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    context = await _context(request, who)
    engine, config = _log(request).engine, request.app.state.routes.config
    await _log(request).sync()  # the arms' newest requests count
    shown = [await asyncio.to_thread(alias_view, engine, request, a) for a in aliases(who, config)]
    versions = await asyncio.to_thread(workbench.adapters_of, engine, who.project)
    notice = request.query_params.get("done")
    return keep(request, render.page("adapters.html", **context, nav="adapters", aliases=shown, versions=versions,
                                     owned={a: owns(who, config, a) for a in config.models}, notice=notice), who)


async def adapter_of(request: Request, who: Viewer, adapter_id: str) -> dict[str, Any]:
    row = await asyncio.to_thread(workbench.adapter, _log(request).engine, adapter_id, who.project)
    if row is None:
        raise NotFound(f"No adapter with id '{adapter_id}' in this project.")
    return row


@router.get("/adapters/{adapter_id}")
async def adapter_page(adapter_id: str, request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    context = await _context(request, who)
    row = await adapter_of(request, who, adapter_id)
    config = request.app.state.routes.config
    metrics = dict(row.get("metrics") or {})
    report = metrics.pop("eval", None)
    plot = bool(report and report.get("plot") and os.path.isfile(str(report["plot"])))
    targets = [a for a in aliases(who, config) if owns(who, config, a) and a != row["name"]]
    return keep(request, render.page("adapter.html", **context, nav="adapters", row=row, metrics=metrics,
                                     report=report, plot=plot, targets=targets), who)


@router.get("/adapters/{adapter_id}/plot")
async def adapter_plot(adapter_id: str, request: Request) -> Response:
    who = await viewer(request)
    if who is None:
        raise NotFound("Sign in first.")
    row = await adapter_of(request, who, adapter_id)
    path = str(((row.get("metrics") or {}).get("eval") or {}).get("plot") or "")
    if not path.endswith(".png") or not os.path.isfile(path):
        raise NotFound("This adapter's evaluation has no plot.")
    body = await asyncio.to_thread(lambda: open(path, "rb").read())
    return Response(body, media_type="image/png", headers={**render.HEADERS, "cache-control": "private, max-age=60"})
