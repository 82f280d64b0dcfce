"""An alias's model entry as the gateway sees it (database over YAML), and writing it.

Every write is validated against the whole effective config first (the gateway would
ignore an invalid one), then stored with ``RouteStore.put``: every replica follows
within its poll interval (~2 s).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from adapters.registry.workspace import Workspace
from gateway.store.routes import RouteStore


class RouteError(ValueError):
    pass


def current_entry(ws: Workspace, alias: str) -> dict[str, Any]:
    stored = RouteStore(ws.engine).get(alias)
    if stored is not None:
        return dict(stored[0])
    model = ws.config.models.get(alias)
    if model is None:
        raise RouteError(f"unknown model {alias!r}: not in the config nor in the database's routes")
    return model.model_dump(exclude_none=True)


def stored_entry(ws: Workspace, alias: str) -> dict[str, Any] | None:
    stored = RouteStore(ws.engine).get(alias)
    return None if stored is None else dict(stored[0])


def live_route(entry: dict[str, Any], exclude: str | None = None) -> dict[str, Any]:
    """The route carrying most weight (the live version), other than ``exclude``."""
    routes = [r for r in entry["routes"] if r["model"] != exclude] or entry["routes"]
    return dict(max(routes, key=lambda r: r.get("weight", 1.0)))


def write(ws: Workspace, alias: str, entry: dict[str, Any] | None) -> None:
    """Store ``entry`` for ``alias`` (``None``: drop the database's entry, the YAML's applies)."""
    from gateway.reload import effective

    store = RouteStore(ws.engine)
    models = store.all()
    if entry is None:
        models.pop(alias, None)
    else:
        models[alias] = entry
    try:
        effective(ws.config, models)
    except Exception as exc:
        raise RouteError(f"the routes for {alias!r} would be invalid: {exc}") from exc
    if entry is None:
        store.delete(alias)
    else:
        store.put(alias, entry)


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
