"""Promotion and rollback from the command line (``tuneloop promote`` / ``rollback``, the loop).

    promote(ws, "smollm2-135m-instruct-ft-acme-1a2b3c4d", "support-bot", canary=10)  # canary arm
    promote(ws, "...", "support-bot")                    # full: 100% on the adapter, status live
    rollback(ws, "support-bot")                          # the previous live version, one write

The work itself is ``gateway.promotion``'s (hot-load, route weights, route history, adapter states,
audit), which the console's adapters page calls too; here it runs on a ``Workspace`` as the command
line's actor, then waits until the gateway at ``ws.gateway_url`` applies the change.
"""

from __future__ import annotations

from typing import Any

from adapters.registry.routes import current_entry, live_route, stored_entry, wait_applied, write
from adapters.registry.workspace import Workspace
from gateway import promotion
from gateway.hotload import load_into_target
from gateway.promotion import PromotionError, adapter_route
from gateway.store.audit import cli_actor

__all__ = ["PromotionError", "adapter_route", "promote", "register_eval_alias", "rollback"]


def promote(ws: Workspace, ref: str, alias: str, canary: float | None = None, reason: str | None = None,
            wait: bool = True, target: str | None = None) -> dict[str, Any]:
    """Route ``canary`` percent (``None``/100: all) of ``alias`` to adapter ``ref``, served by
    ``target`` (default: the target of the alias's live route)."""
    out = promotion.promote(ws.engine, ws.config, ref, alias, canary, reason, target, actor=cli_actor())
    after = out.pop("entry")
    out["gateway_applied"] = wait_applied(ws, alias, after) if wait else False
    return out


def rollback(ws: Workspace, alias: str, reason: str | None = None, wait: bool = True) -> dict[str, Any]:
    """Restore the version that was live before the newest deployment of ``alias``."""
    out = promotion.rollback(ws.engine, ws.config, alias, reason, actor=cli_actor())
    after = out.pop("entry")
    out["gateway_applied"] = wait_applied(ws, alias, after) if wait else False
    return out


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
