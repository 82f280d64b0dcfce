"""Liveness and readiness.

Live: the process answers. Ready: not draining, and every vLLM target (the embedded engine
included) has a replica whose /health answers and whose circuit breaker is not open (a
replica that answers /health while failing every request is not ready; ``open`` lists
the targets whose every breaker is open). OpenAI targets are reported (is their key
set?) but do not gate readiness: a pod without one can still serve every other model.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    state = request.app.state
    providers = state.routes.router.providers
    results = await asyncio.gather(*(p.ready() for p in providers.values()))
    targets: dict[str, Any] = dict(zip(providers, results, strict=True))
    gating = [ok for name, ok in targets.items() if providers[name].kind == "vllm"]
    tripped = sorted(name for name, p in providers.items() if p.replicas.all_open())
    ok = all(gating) and not state.draining and not any(providers[n].kind == "vllm" for n in tripped)
    body = {"status": "ready" if ok else "not_ready", "draining": state.draining, "targets": targets,
            "open": tripped}
    return JSONResponse(body, status_code=200 if ok else 503)
