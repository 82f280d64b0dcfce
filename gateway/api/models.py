"""GET /v1/models and /v1/models/{model}: the names clients may call (the config's models).

Each card carries, besides OpenAI's fields, ``routes`` and ``fallbacks``: which ``ft:``
models and LoRA adapters stand behind the name.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gateway.errors import ModelNotFound

router = APIRouter()


def _card(name: str, request: Request) -> dict[str, Any]:
    cfg = request.app.state.routes.config.models[name]
    return {
        "id": name, "object": "model", "created": request.app.state.started, "owned_by": cfg.owned_by,
        "routes": [r.model_dump() for r in cfg.routes], "fallbacks": cfg.fallbacks,
    }


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    names = request.app.state.routes.config.models
    return {"object": "list", "data": [_card(n, request) for n in names]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    if model not in request.app.state.routes.config.models:
        raise ModelNotFound(model)
    return _card(model, request)
