"""A fine-tuned model becomes callable through the gateway, and stops being so.

When a local job succeeds, its worker writes a database route named after the model
(``fine_tuned_model``) to the targets that serve its base (:func:`serving_targets`)::

    smollm2-135m-instruct-ft-acme-1a2b3c4d:
      routes: [{target: local, model: smollm2-135m-instruct-ft-acme-1a2b3c4d, lora_path: /.../adapters/...}]

so every gateway replica lists it in ``GET /v1/models`` and routes
``chat.completions.create(model=fine_tuned_model)`` to a replica of that target, loading the
adapter there on demand (``POST /v1/load_lora_adapter`` with the route's ``lora_path``: the
vLLM provider's adapter-aware choice). Replicas poll the routes table every 2 s
(``gateway.reload.watch_db_routes``), so the worker waits :data:`PROPAGATION_S` after the
write before it marks the job ``succeeded``: by the time a client sees ``succeeded``, every
healthy replica routes the model ("at once", as on OpenAI).

``DELETE /v1/models/{model}`` (``gateway.api.models_admin``) undoes it: the route goes (at
once on the replica that answers, within 2 s on the others) and the adapter is unloaded
from every replica of those targets. Nothing here imports torch.

Which targets serve a base: the catalog entry's ``targets`` when given, else those whose ``GET
/v1/models`` lists it as a base model (a card without ``parent`` whose ``id`` is the name or
whose ``root`` is the path: vLLM's ``--served-model-name`` and ``--model``), else, for the
embedded default, the config's ``embedded`` targets.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import sqlalchemy as sa

from gateway.catalog import BaseModel
from gateway.config import bearer
from gateway.store.routes import RouteStore
from gateway.store.schema import adapters

PROPAGATION_S = float(os.environ.get("TUNELOOP_ROUTE_PROPAGATION_S", "2.5"))  # the routes poll (2 s) + margin


def _serves(card: dict[str, Any], base: BaseModel) -> bool:
    if card.get("parent"):
        return False  # an adapter, not a base
    return card.get("id") == base.name or (base.path is not None and card.get("root") == base.path)


def serving_targets(base: BaseModel, timeout_s: float = 3.0) -> list[str]:
    """The targets that serve ``base`` (see the module's docstring), in config order."""
    if base.targets:
        return list(base.targets)
    found = []
    with httpx.Client(timeout=timeout_s) as client:
        for name, target in base.candidates.items():
            for url in target["base_urls"]:
                try:
                    resp = client.get(f"{url}/models", headers=bearer(target.get("api_key_env")))
                    cards = resp.json().get("data", []) if resp.status_code == 200 else []
                except (httpx.HTTPError, ValueError):
                    continue
                if any(_serves(c, base) for c in cards):
                    found.append(name)
                    break
    if not found and base.embedded:
        found = [name for name, t in base.candidates.items() if t.get("embedded")]
    return found


def route_entry(name: str, lora_path: str, targets: list[str], project: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"routes": [{"target": t, "model": name, "weight": 1.0, "lora_path": lora_path}
                                        for t in targets],
                             "owned_by": project or "tuneloop"}
    if project:
        entry["project"] = project
    return entry


def publish(engine: sa.Engine, job: dict[str, Any], name: str, lora_path: str, base: BaseModel,
            wait: bool = True) -> list[str]:
    """Route ``name`` to the targets serving ``base``; returns them (empty: nothing serves the base)."""
    targets = serving_targets(base)
    if not targets:
        return []
    RouteStore(engine).put(name, route_entry(name, lora_path, targets, job.get("project")))
    if wait:
        time.sleep(PROPAGATION_S)
    return targets


def forget_adapter(engine: sa.Engine, adapter_id: str) -> None:
    """Drop the registry row of an adapter whose job was cancelled before it could succeed."""
    with engine.begin() as conn:
        conn.execute(adapters.delete().where(adapters.c.id == adapter_id))
