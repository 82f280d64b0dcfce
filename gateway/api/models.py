"""GET /v1/models and /v1/models/{model}: the names clients may call (the config's models).

Every card has OpenAI's fields (``id``, ``object``, ``created``, ``owned_by``) and vLLM's
``root`` (the upstream model or adapter the name serves: its heaviest route) and
``parent`` (the base model of an adapter, as its vLLM target reports it, or the base of
an OpenAI ``ft:`` model; null when unknown), and OpenAI's ``shutdown_date``: the first date on
which one of its routes' ``ft:`` models is retired (``gateway.retirements``; null when none is).
Admin keys also see ``routes`` (targets, adapter paths) and ``fallbacks``; other callers never
see a path or a URL.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from gateway.config import ModelConfig
from gateway.errors import ModelNotFound
from gateway.retirements import earliest_shutdown

router = APIRouter()

CARDS_TTL_S = 5.0
_cards: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}  # target -> (when, id -> card)


def _root(cfg: ModelConfig) -> tuple[str, str]:
    route = max(cfg.routes, key=lambda r: r.weight)
    return route.target, route.model


def _clean_parent(parent: Any) -> str | None:
    """A model name, never a path (vLLM names a model served from disk by its path)."""
    if not isinstance(parent, str) or not parent or parent.startswith(("/", ".", "~")) or "\\" in parent:
        return None
    return parent


async def _target_cards(request: Request, targets: set[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The upstream's model cards per vLLM target (cached a few seconds; unreachable: none)."""
    providers = request.app.state.routes.router.providers
    now = time.monotonic()
    wanted = [t for t in targets if t in providers and providers[t].kind == "vllm"
              and (t not in _cards or now - _cards[t][0] > CARDS_TTL_S)]
    for target, cards in zip(wanted, await asyncio.gather(*(providers[t].list_models() for t in wanted)),
                             strict=True):
        _cards[target] = (now, {c["id"]: c for c in cards if isinstance(c, dict) and isinstance(c.get("id"), str)})
    return {t: _cards[t][1] for t in targets if t in _cards}


def _parent(model: str, card: dict[str, Any] | None) -> str | None:
    if card is not None:
        return _clean_parent(card.get("parent"))
    if model.startswith("ft:"):
        return model.split(":")[1] or None  # ft:<base>:<org>::<id>
    return None


def _card(name: str, request: Request, cards: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    cfg = request.app.state.routes.config.models[name]
    target, model = _root(cfg)
    card = {"id": name, "object": "model", "created": request.app.state.started, "owned_by": cfg.owned_by,
            "root": model, "parent": _parent(model, cards.get(target, {}).get(model))}
    shutdown = earliest_shutdown(r.model for r in cfg.routes)
    card["shutdown_date"] = shutdown.isoformat() if shutdown else None
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.admin:
        card["routes"] = [r.model_dump() for r in cfg.routes]
        card["fallbacks"] = cfg.fallbacks
    return card


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    names = request.app.state.routes.config.models
    cards = await _target_cards(request, {_root(m)[0] for m in names.values()})
    return {"object": "list", "data": [_card(n, request, cards) for n in names]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    models = request.app.state.routes.config.models
    if model not in models:
        raise ModelNotFound(model)
    return _card(model, request, await _target_cards(request, {_root(models[model])[0]}))
