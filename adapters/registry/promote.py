"""Promotion and rollback: hot-load the adapter, then shift the alias's route weights.

    promote(ws, "smollm2-135m-instruct-ft-acme-1a2b3c4d", "support-bot", canary=10)  # canary arm
    promote(ws, "...", "support-bot")                    # full: 100% on the adapter, status live
    rollback(ws, "support-bot")                          # the previous live version, one write

States: ``candidate`` (trained) -> ``canary`` (a share of traffic) -> ``live`` (all of it)
-> ``retired`` (replaced or rolled back). Each route change is a ``route_history`` row
whose ``restore`` is the entry that was fully live before this deployment began, so a
rollback, even after canary and full promotion, is one ``RouteStore`` write.
"""

from __future__ import annotations

from typing import Any

from adapters.registry.hotload import load_into_target
from adapters.registry.routes import current_entry, live_route, stored_entry, wait_applied, write
from adapters.registry.workspace import Workspace
from gateway.store.audit import AuditStore, cli_actor
from gateway.store.registry import AdapterRegistry, RouteHistory


class PromotionError(RuntimeError):
    pass


def adapter_route(adapter: dict[str, Any], target: str, weight: float) -> dict[str, Any]:
    return {"target": target, "model": adapter["name"], "weight": weight, "lora_path": adapter["path"]}


def _resolve(ws: Workspace, ref: str) -> dict[str, Any]:
    adapter = AdapterRegistry(ws.engine).get(ref)
    if adapter is None:
        raise PromotionError(f"no adapter {ref!r}")
    if not adapter.get("path"):
        raise PromotionError(f"adapter {ref!r} has no path to load it from")
    return adapter


def promote(ws: Workspace, ref: str, alias: str, canary: float | None = None, reason: str | None = None,
            wait: bool = True, target: str | None = None) -> dict[str, Any]:
    """Route ``canary`` percent (``None``/100: all) of ``alias`` to adapter ``ref``, served by
    ``target`` (default: the target of the alias's live route)."""
    if canary is not None and canary <= 0:  # before anything is hot-loaded
        raise PromotionError("--canary must be between 0 and 100 (exclusive of 0)")
    share = None if canary is None or canary >= 100 else canary
    full = share is None
    adapter, reg, hist = _resolve(ws, ref), AdapterRegistry(ws.engine), RouteHistory(ws.engine)
    entry = current_entry(ws, alias)
    live = live_route(entry, exclude=adapter["name"])
    target = target or live["target"]
    loaded = load_into_target(ws.config, target, adapter["name"], adapter["path"])
    routes = ([adapter_route(adapter, target, 100)] if share is None
              else [{**live, "weight": 100 - share}, adapter_route(adapter, target, share)])
    after = {**entry, "routes": routes}
    ongoing = hist.current(alias)
    restore = (ongoing["restore"] if ongoing and ongoing["adapter_id"] == adapter["id"]
               else stored_entry(ws, alias))
    previous = hist.current(alias, ("promote",))
    previous_id = previous["adapter_id"] if previous else None
    write(ws, alias, after)
    hist.add(alias, "promote" if full else "canary", before=entry, after=after, restore=restore,
             adapter_id=adapter["id"], previous_adapter_id=previous_id, reason=reason)
    if full:
        reg.set_status(adapter["id"], "live")
        if previous_id and previous_id != adapter["id"]:
            reg.set_status(previous_id, "retired")
    else:
        reg.set_status(adapter["id"], "canary")
    AuditStore(ws.engine).add(cli_actor(), "adapter.promote" if full else "adapter.canary", alias,
                              {"adapter_id": adapter["id"], "canary": share, "reason": reason})
    applied = wait_applied(ws, alias, after) if wait else False
    return {"alias": alias, "adapter": adapter["name"], "adapter_id": adapter["id"],
            "action": "promote" if full else "canary", "routes": routes, "hot_load": loaded,
            "gateway_applied": applied}


def rollback(ws: Workspace, alias: str, reason: str | None = None, wait: bool = True) -> dict[str, Any]:
    """Restore the version that was live before the newest deployment of ``alias``."""
    reg, hist = AdapterRegistry(ws.engine), RouteHistory(ws.engine)
    row = hist.current(alias)
    if row is None:
        raise PromotionError(f"nothing to roll back for {alias!r}: no promotion or canary in its history")
    restore = row["restore"]
    for route in (restore or {}).get("routes", []):  # an adapter the engines may have dropped
        if route.get("lora_path"):
            load_into_target(ws.config, route["target"], route["model"], route["lora_path"])
    before = current_entry(ws, alias)
    write(ws, alias, restore)
    hist.mark_rolled_back(alias, row["adapter_id"])
    hist.add(alias, "rollback", before=before, after=restore, restore=None, adapter_id=row["adapter_id"],
             previous_adapter_id=row["previous_adapter_id"], reason=reason)
    if row["adapter_id"]:
        reg.set_status(row["adapter_id"], "retired")
    if row["previous_adapter_id"]:
        reg.set_status(row["previous_adapter_id"], "live")
    AuditStore(ws.engine).add(cli_actor(), "adapter.rollback", alias,
                              {"adapter_id": row["adapter_id"], "restored": row["previous_adapter_id"],
                               "reason": reason})
    after = current_entry(ws, alias)
    applied = wait_applied(ws, alias, after) if wait else False
    return {"alias": alias, "rolled_back": row["adapter_id"], "restored": after["routes"],
            "gateway_applied": applied}


def register_eval_alias(ws: Workspace, adapter: dict[str, Any], like: str, target: str | None = None) -> str:
    """Make the adapter callable through the gateway under its own name (for evaluation and
    shadowing), on ``target`` (default: that of ``like``'s live route). Returns the name."""
    target = target or live_route(current_entry(ws, like))["target"]
    load_into_target(ws.config, target, adapter["name"], adapter["path"])
    entry = {"routes": [adapter_route(adapter, target, 1)]}
    if stored_entry(ws, adapter["name"]) != entry:
        write(ws, adapter["name"], entry)
        wait_applied(ws, adapter["name"], entry)
    return str(adapter["name"])
