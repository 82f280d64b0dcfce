"""A fine-tuned model becomes callable through the gateway, and stops being so.

When a local job succeeds, its worker writes a database route named after the model
(``fine_tuned_model``) to the targets that serve its base (``catalog.serving_targets``)::

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
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa

from adapters.models.catalog import BaseModel, serving_targets
from gateway.store.routes import RouteStore
from gateway.store.schema import adapters, jobs

PROPAGATION_S = float(os.environ.get("TUNELOOP_ROUTE_PROPAGATION_S", "2.5"))  # the routes poll (2 s) + margin


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


def unpublish(engine: sa.Engine, name: str) -> dict[str, Any] | None:
    """Drop ``name``'s route; returns the entry it had (None: there was none)."""
    store = RouteStore(engine)
    found = store.get(name)
    if found is None:
        return None
    store.delete(name)
    return found[0]


def job_of_model(engine: sa.Engine, name: str) -> dict[str, Any] | None:
    """The local job whose fine-tuned model is ``name`` (None: no such model of ours)."""
    q = sa.select(jobs).where(jobs.c.fine_tuned_model == name, jobs.c.backend == "local").limit(1)
    with engine.connect() as conn:
        row = conn.execute(q).mappings().first()
    return None if row is None else dict(row)


def forget_adapter(engine: sa.Engine, adapter_id: str) -> None:
    """Drop the registry row of an adapter whose job was cancelled before it could succeed."""
    with engine.begin() as conn:
        conn.execute(adapters.delete().where(adapters.c.id == adapter_id))
