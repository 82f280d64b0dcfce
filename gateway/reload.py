"""Live route changes: the config file and the database's routes are watched, and the
routing table is swapped in place.

The effective config is the YAML's, with each model stored in the database (written by
promotion) replacing or adding that model.

In-flight requests keep the router they started with; new requests see the new one. A
target whose settings did not change keeps its provider (connection pools, breakers); a
replaced provider is closed only after its requests have had ``timeout_s`` to finish.
A config that fails validation is logged and ignored: the old table stays. Every reload
and every refused one is counted in ``tuneloop_route_reloads_total{source, result}``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.metrics import RELOADS
from gateway.providers import Provider, make_provider
from gateway.providers.openai import load_sdk
from gateway.router import Router
from gateway.store.routes import RouteStore

log = logging.getLogger(__name__)


def effective(file_config: GatewayConfig, db_models: dict[str, dict[str, Any]]) -> GatewayConfig:
    """The YAML config with the database's models laid over it (validated as a whole)."""
    if not db_models:
        return file_config
    data = file_config.model_dump()
    data["models"] = {**data["models"], **db_models}
    return GatewayConfig.model_validate(data)


def rebuild(routes: Any, config: GatewayConfig) -> list[Provider]:
    """Swap ``routes`` to ``config``; returns the providers that are no longer used."""
    old_router: Router = routes.router
    providers: dict[str, Provider] = {}
    for name, target in config.targets.items():
        current = old_router.providers.get(name)
        providers[name] = current if current is not None and current.cfg == target else make_provider(name, target)
    kept = {id(p) for p in providers.values()}
    retired = [p for p in old_router.providers.values() if id(p) not in kept]
    routes.router = Router(config, providers)
    routes.config = config
    return retired


def apply(routes: Any, file_config: GatewayConfig, db_models: dict[str, dict[str, Any]],
          source: str, kind: str = "file") -> bool:
    """Rebuild from both sources; a config that fails validation is logged and ignored."""
    try:
        config = effective(file_config, db_models)
    except Exception as exc:  # a bad edit must not take routing down
        log.error("routes from %s are invalid, keeping the current ones: %s", source, exc)
        RELOADS.labels(kind, "invalid").inc()
        return False
    routes.file_config, routes.db_models = file_config, db_models
    retired = rebuild(routes, config)
    RELOADS.labels(kind, "ok").inc()
    log.info("routes reloaded from %s (%d models)", source, len(config.models))
    for provider in retired:
        asyncio.get_running_loop().call_later(provider.cfg.timeout_s + 1, _close, provider)
    return True


def _close(provider: Provider) -> None:
    asyncio.ensure_future(provider.aclose())


async def watch_config(routes: Any, path: Path, interval_s: float = 1.0) -> None:
    """Poll ``path``'s modification time; reload on change. Runs until cancelled."""
    last = path.stat().st_mtime_ns if path.exists() else 0
    while True:
        await asyncio.sleep(interval_s)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            continue
        if mtime == last:
            continue
        last = mtime
        try:
            file_config = GatewayConfig.load(path)
        except Exception as exc:
            log.error("config %s is invalid, keeping the current routes: %s", path, exc)
            RELOADS.labels("file", "invalid").inc()
            continue
        if any(t.kind == "openai" for t in file_config.targets.values()):
            await asyncio.to_thread(load_sdk)  # a first `openai` target: its SDK imported off the event loop
        apply(routes, file_config, routes.db_models, str(path))


async def watch_db_routes(routes: Any, store: RouteStore, interval_s: float = 2.0) -> None:
    """Poll the routes table's fingerprint; reload on change. Runs until cancelled."""
    last: tuple[Any, ...] | None = None
    while True:
        try:
            fingerprint = await asyncio.to_thread(store.fingerprint)
            if fingerprint != last:
                db_models = await asyncio.to_thread(store.all)
                if apply(routes, routes.file_config, db_models, "the database", "database"):
                    last = fingerprint
        except Exception as exc:  # the database may be away: keep routing with what we have
            log.warning("cannot read routes from the database: %s", exc)
        await asyncio.sleep(interval_s)
