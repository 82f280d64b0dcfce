"""Promotion and rollback: hot-load the adapter, then shift the alias's route weights.

    promote(engine, config, "smollm2-135m-instruct-ft-acme-1a2b3c4d", "support-bot", canary=10, actor=...)
    promote(engine, config, "...", "support-bot", actor=...)   # full: 100% on the adapter, status live
    rollback(engine, config, "support-bot", actor=...)         # the previous live version, one write

States: ``candidate`` (trained) -> ``canary`` (a share of traffic) -> ``live`` (all of it)
-> ``retired`` (replaced or rolled back). Each route change is a ``route_history`` row
whose ``restore`` is the entry that was fully live before this deployment began, so a
rollback, even after canary and full promotion, is one ``RouteStore`` write.

The one implementation behind ``tuneloop promote`` / ``tuneloop rollback`` (``adapters.registry.promote``
wraps these and then waits for a running gateway to apply the change) and the console's adapters page
(which applies it at once on its own replica). ``config`` is the gateway's YAML (or embedded) config:
the database's routes are laid over it. An alias's entry as the gateway sees it (database over YAML)
is :func:`current_entry`; every write is validated against the whole effective config first, then
stored with ``RouteStore.put``: every replica follows within its poll interval (~2 s).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from gateway.config import GatewayConfig
from gateway.hotload import load_into_target
from gateway.store.audit import AuditStore
from gateway.store.registry import AdapterRegistry, RouteHistory
from gateway.store.routes import RouteStore


class PromotionError(RuntimeError):
    pass


class RouteError(ValueError):
    pass


def current_entry(engine: sa.Engine, config: GatewayConfig, alias: str) -> dict[str, Any]:
    stored = RouteStore(engine).get(alias)
    if stored is not None:
        return dict(stored[0])
    model = config.models.get(alias)
    if model is None:
        raise RouteError(f"unknown model {alias!r}: not in the config nor in the database's routes")
    return model.model_dump(exclude_none=True)


def stored_entry(engine: sa.Engine, alias: str) -> dict[str, Any] | None:
    stored = RouteStore(engine).get(alias)
    return None if stored is None else dict(stored[0])


def live_route(entry: dict[str, Any], exclude: str | None = None) -> dict[str, Any]:
    """The route carrying most weight (the live version), other than ``exclude``."""
    routes = [r for r in entry["routes"] if r["model"] != exclude] or entry["routes"]
    return dict(max(routes, key=lambda r: r.get("weight", 1.0)))


def write(engine: sa.Engine, config: GatewayConfig, alias: str, entry: dict[str, Any] | None) -> None:
    """Store ``entry`` for ``alias`` (``None``: drop the database's entry, the YAML's applies)."""
    from gateway.reload import effective

    store = RouteStore(engine)
    models = store.all()
    if entry is None:
        models.pop(alias, None)
    else:
        models[alias] = entry
    try:
        effective(config, models)
    except Exception as exc:
        raise RouteError(f"the routes for {alias!r} would be invalid: {exc}") from exc
    if entry is None:
        store.delete(alias)
    else:
        store.put(alias, entry)


def adapter_route(adapter: dict[str, Any], target: str, weight: float) -> dict[str, Any]:
    return {"target": target, "model": adapter["name"], "weight": weight, "lora_path": adapter["path"]}


def resolve(engine: sa.Engine, ref: str) -> dict[str, Any]:
    adapter = AdapterRegistry(engine).get(ref)
    if adapter is None:
        raise PromotionError(f"no adapter {ref!r}")
    if not adapter.get("path"):
        raise PromotionError(f"adapter {ref!r} has no path to load it from")
    return adapter


def promote(engine: sa.Engine, config: GatewayConfig, ref: str, alias: str, canary: float | None = None,
            reason: str | None = None, target: str | None = None, *, actor: str) -> dict[str, Any]:
    """Route ``canary`` percent (``None``/100: all) of ``alias`` to adapter ``ref``, served by
    ``target`` (default: the target of the alias's live route); ``actor`` names who did it in the audit."""
    if canary is not None and canary <= 0:  # before anything is hot-loaded
        raise PromotionError("--canary must be between 0 and 100 (exclusive of 0)")
    share = None if canary is None or canary >= 100 else canary
    full = share is None
    adapter, reg, hist = resolve(engine, ref), AdapterRegistry(engine), RouteHistory(engine)
    entry = current_entry(engine, config, alias)
    live = live_route(entry, exclude=adapter["name"])
    target = target or live["target"]
    loaded = load_into_target(config, target, adapter["name"], adapter["path"])
    routes = ([adapter_route(adapter, target, 100)] if share is None
              else [{**live, "weight": 100 - share}, adapter_route(adapter, target, share)])
    after = {**entry, "routes": routes}
    ongoing = hist.current(alias)
    restore = (ongoing["restore"] if ongoing and ongoing["adapter_id"] == adapter["id"]
               else stored_entry(engine, alias))
    previous = hist.current(alias, ("promote",))
    previous_id = previous["adapter_id"] if previous else None
    write(engine, config, alias, after)
    hist.add(alias, "promote" if full else "canary", before=entry, after=after, restore=restore,
             adapter_id=adapter["id"], previous_adapter_id=previous_id, reason=reason)
    if full:
        reg.set_status(adapter["id"], "live")
        if previous_id and previous_id != adapter["id"]:
            reg.set_status(previous_id, "retired")
    else:
        reg.set_status(adapter["id"], "canary")
    AuditStore(engine).add(actor, "adapter.promote" if full else "adapter.canary", alias,
                           {"adapter_id": adapter["id"], "canary": share, "reason": reason})
    return {"alias": alias, "adapter": adapter["name"], "adapter_id": adapter["id"],
            "action": "promote" if full else "canary", "routes": routes, "hot_load": loaded, "entry": after}


def rollback(engine: sa.Engine, config: GatewayConfig, alias: str, reason: str | None = None, *,
             actor: str) -> dict[str, Any]:
    """Restore the version that was live before the newest deployment of ``alias``."""
    reg, hist = AdapterRegistry(engine), RouteHistory(engine)
    row = hist.current(alias)
    if row is None:
        raise PromotionError(f"nothing to roll back for {alias!r}: no promotion or canary in its history")
    restore = row["restore"]
    for route in (restore or {}).get("routes", []):  # an adapter the engines may have dropped
        if route.get("lora_path"):
            load_into_target(config, route["target"], route["model"], route["lora_path"])
    before = current_entry(engine, config, alias)
    write(engine, config, alias, restore)
    hist.mark_rolled_back(alias, row["adapter_id"])
    hist.add(alias, "rollback", before=before, after=restore, restore=None, adapter_id=row["adapter_id"],
             previous_adapter_id=row["previous_adapter_id"], reason=reason)
    if row["adapter_id"]:
        reg.set_status(row["adapter_id"], "retired")
    if row["previous_adapter_id"]:
        reg.set_status(row["previous_adapter_id"], "live")
    AuditStore(engine).add(actor, "adapter.rollback", alias,
                           {"adapter_id": row["adapter_id"], "restored": row["previous_adapter_id"],
                            "reason": reason})
    after = current_entry(engine, config, alias)
    return {"alias": alias, "rolled_back": row["adapter_id"], "restored": after["routes"], "entry": after}
