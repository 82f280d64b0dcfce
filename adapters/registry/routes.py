"""An alias's model entry as the gateway sees it (database over YAML), writing it, and waiting for a
running gateway to apply it.

The reads and the write are ``gateway.promotion``'s (the console promotes through the same code);
here they take the command line's ``Workspace``. Every replica follows a write within its poll
interval (~2 s); :func:`wait_applied` asks the gateway until it routes the alias as written.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from adapters.registry.workspace import Workspace
from gateway import promotion
from gateway.promotion import RouteError, live_route

__all__ = ["RouteError", "current_entry", "live_route", "stored_entry", "wait_applied", "write"]


def current_entry(ws: Workspace, alias: str) -> dict[str, Any]:
    return promotion.current_entry(ws.engine, ws.config, alias)


def stored_entry(ws: Workspace, alias: str) -> dict[str, Any] | None:
    return promotion.stored_entry(ws.engine, alias)


def write(ws: Workspace, alias: str, entry: dict[str, Any] | None) -> None:
    """Store ``entry`` for ``alias`` (``None``: drop the database's entry, the YAML's applies)."""
    promotion.write(ws.engine, ws.config, alias, entry)


def wait_applied(ws: Workspace, alias: str, entry: dict[str, Any] | None, timeout_s: float = 15.0) -> bool:
    """Wait until the gateway at ``ws.gateway_url`` routes ``alias`` as ``entry`` (False if unreachable)."""
    want = None if entry is None else sorted(r["model"] for r in entry["routes"])
    root = ws.gateway_url.removesuffix("/v1")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            resp = httpx.get(f"{root}/v1/admin/routes", timeout=5,
                             headers={"Authorization": f"Bearer {ws.api_key}"})
            if resp.status_code in (401, 403):  # no admin key (a loopback gateway without keys)
                return _wait_listed(ws, alias, entry, deadline)
            if resp.status_code != 200:
                return False
            model = resp.json()["models"].get(alias)
            have = None if model is None else sorted(r["model"] for r in model["routes"])
            if want is None or have == want:
                return True
        except httpx.HTTPError:
            return False
        time.sleep(0.3)
    return False


def _wait_listed(ws: Workspace, alias: str, entry: dict[str, Any] | None, deadline: float) -> bool:
    """Without an admin key: wait until ``/v1/models/{alias}`` shows the change: the routes when the
    card lists them (admin), else its ``root`` (the heaviest route's model), so a canary's weights,
    which leave the root alone, are not confirmed."""
    want = None if entry is None else sorted(r["model"] for r in entry["routes"])
    root = None if entry is None else live_route(entry)["model"]
    while time.time() < deadline:
        try:
            resp = httpx.get(f"{ws.gateway_url}/models/{alias}", timeout=5,
                             headers={"Authorization": f"Bearer {ws.api_key}"})
        except httpx.HTTPError:
            return False
        if resp.status_code == 404 and entry is None:
            return True
        if resp.status_code == 200 and entry is not None:
            card = resp.json()
            if ("routes" in card and sorted(r["model"] for r in card["routes"]) == want) \
                    or ("routes" not in card and card.get("root") == root):
                return True
        elif resp.status_code not in (200, 404):
            return False
        time.sleep(0.3)
    return False
