"""DELETE /v1/models/{model}: delete a fine-tuned model (OpenAI's ``ModelDeleted``).

Only models our local jobs made, and only by the job's project or an admin (anyone else gets
the same 404 as for a model that does not exist). The model's database route goes, applied
at once on this replica (the others follow within their 2 s poll), and the adapter is
unloaded from every replica of the targets that served it (``POST /v1/unload_lora_adapter``;
a replica that does not hold it, or is down, is skipped). A model another alias still routes
to (a promotion) is a 409: roll that back first. The adapter's folder stays on disk, its
registry row becomes ``retired``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from fastapi import APIRouter, Request

from gateway.config import bearer
from gateway.errors import Conflict, ModelNotFound
from gateway.reload import apply
from gateway.store.audit import AuditStore, actor_of
from gateway.store.jobs import JobStore, job_of_model
from gateway.store.registry import AdapterRegistry
from gateway.store.routes import RouteStore

log = logging.getLogger(__name__)
router = APIRouter(tags=["models"])


def _owned(engine: Any, model: str, principal: Any) -> dict[str, Any] | None:
    job = job_of_model(engine, model)
    if job is None or not (principal.admin or (job.get("project") or "default") == principal.project):
        return None
    routed = RouteStore(engine).get(model) is not None
    live = [a for a in JobStore(engine).adapters_of(job["id"]) if a["status"] != "retired"]
    return job if routed or live else None  # deleted already


def _unpublish(engine: Any, model: str) -> dict[str, Any] | None:
    """Drop the model's database route; returns the entry it had (None: there was none)."""
    store = RouteStore(engine)
    found = store.get(model)
    if found is not None:
        store.delete(model)
    return None if found is None else found[0]


def _retire(engine: Any, job_id: str) -> None:
    registry = AdapterRegistry(engine)
    for adapter in JobStore(engine).adapters_of(job_id):
        registry.set_status(adapter["id"], "retired")


@router.delete("/v1/models/{model:path}")
async def delete_model(model: str, request: Request) -> dict[str, Any]:
    engine, routes = request.app.state.log.engine, request.app.state.routes
    job = await asyncio.to_thread(_owned, engine, model, request.state.principal)
    if job is None:
        raise ModelNotFound(model)
    users = sorted(alias for alias, cfg in routes.config.models.items()
                   if alias != model and any(r.model == model for r in cfg.routes))
    if users:
        raise Conflict(f"The model {model} is routed by {', '.join(users)}: roll that back (tuneloop rollback) "
                       "or re-route it before deleting the model.", param="model")
    entry = await asyncio.to_thread(_unpublish, engine, model)
    apply(routes, routes.file_config, await asyncio.to_thread(RouteStore(engine).all), "DELETE /v1/models",
          "database")
    await asyncio.to_thread(_retire, engine, job["id"])
    await asyncio.to_thread(AuditStore(engine).add, actor_of(request.state.principal), "model.delete", model,
                            {"job": job["id"]})
    targets = {r["target"] for r in (entry or {}).get("routes", [])}
    await _unload(routes.config, targets, model)
    return {"id": model, "object": "model", "deleted": True}


async def _unload(config: Any, targets: set[str], name: str) -> None:
    urls = [(u, bearer(config.targets[t].api_key_env)) for t in targets
            if t in config.targets and config.targets[t].kind == "vllm" for u in config.targets[t].base_urls]
    async with httpx.AsyncClient(timeout=10) as client:
        async def one(url: str, headers: dict[str, str]) -> None:
            try:
                resp = await client.post(f"{url}/unload_lora_adapter", json={"lora_name": name}, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("could not unload %s from %s: %s", name, url, exc)
                return
            if resp.status_code not in (200, 400, 404):  # 400/404: that replica did not hold it
                log.warning("unloading %s from %s: HTTP %s %s", name, url, resp.status_code, resp.text[:200])

        await asyncio.gather(*(one(u, h) for u, h in urls))
