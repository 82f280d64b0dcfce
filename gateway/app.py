"""Builds the gateway: ``create_app(settings, config)`` -> an ASGI app.

``POST /v1/chat/completions`` is served by a raw ASGI endpoint (``gateway.api.chat``) in
front of FastAPI: on the hot path we parse only what routing needs and skip FastAPI's
request models and response re-validation. ``POST /v1/completions`` (the legacy API,
``gateway.api.completions``) shares its routed path (``gateway.api.routed``). ``POST /v1/responses``
is a raw ASGI endpoint too (``gateway.api.responses``), which serves it on the same routed path,
translated onto chat completions (``gateway.api.responses_translated``) or passed through to targets
that serve the Responses API (``gateway.api.responses_native``).
Everything else (models, stored completions and responses, feedback, health, metrics) is
ordinary FastAPI.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway import console
from gateway.api import admin, errors, health, models
from gateway.api.chat import ChatCompletions
from gateway.api.completions import TextCompletions
from gateway.api.deps import authenticated
from gateway.api.openapi import with_chat_completions, with_responses
from gateway.api.responses import ResponsesEndpoint
from gateway.api.responses_native import NativeResponses
from gateway.api.responses_translated import TranslatedResponses
from gateway.auth import Authenticator, resolve_mode
from gateway.config import GatewayConfig
from gateway.errors import AuthenticationFailed
from gateway.log.retention import run_retention
from gateway.log.service import LogService
from gateway.ratelimit import make_limiter
from gateway.reload import watch_config, watch_db_routes
from gateway.router import Router
from gateway.settings import Settings, database_url
from gateway.store.keys import KeyStore
from gateway.store.routes import RouteStore
from gateway.store.upkeep import run_upkeep


def metrics_registry() -> Any:
    """This process's registry, or with several workers (``PROMETHEUS_MULTIPROC_DIR``) the
    union of every worker's metrics, whichever worker answers the scrape."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


async def _refresh_log_gauges() -> None:
    from gateway.log import metrics as log_metrics

    while True:
        log_metrics.refresh()
        await asyncio.sleep(1.0)


class Routes:
    """The live routing table; replaced as a whole when the config or the DB's routes change."""

    def __init__(self, config: GatewayConfig) -> None:
        self.file_config = config  # the YAML's
        self.db_models: dict[str, Any] = {}  # models stored in the database (promotion)
        self.config = config  # the effective one
        self.router = Router(config)


class Gateway:
    """The ASGI callable: the hot path first, FastAPI for the rest."""

    def __init__(self, api: FastAPI, chat: ChatCompletions, responses: ResponsesEndpoint,
                 completions: TextCompletions) -> None:
        self.api = api
        self.chat = chat
        self.responses = responses
        self.completions = completions
        self.state = api.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/chat/completions":
            await self.chat(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/responses":
            await self.responses(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/completions":
            await self.completions(scope, receive, send)
        else:
            await self.api(scope, receive, send)


class _LogRef:
    """Lets the hot path reach the log that the lifespan opens."""

    service: LogService | None = None

    def submit(self, record: Any) -> bool:
        assert self.service is not None, "the log is opened by the app's lifespan"
        return self.service.submit(record)


def create_app(settings: Settings, config: GatewayConfig) -> Gateway:
    log_ref = _LogRef()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_ref.service = app.state.log = await LogService.open(
            database_url(settings, config), settings.resolved_home(), queue_size=settings.log_queue_size)
        await auth.start(KeyStore(app.state.log.engine))
        watchers = [asyncio.create_task(watch_db_routes(app.state.routes, RouteStore(app.state.log.engine)))]
        if settings.config is not None:
            watchers.append(asyncio.create_task(watch_config(app.state.routes, settings.config)))
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            watchers.append(asyncio.create_task(_refresh_log_gauges()))
        watchers.append(asyncio.create_task(run_upkeep(app.state.log.engine)))
        if config.retention_days:
            watchers.append(asyncio.create_task(run_retention(app.state.log.engine, config.retention_days)))
        try:
            yield
        finally:
            app.state.draining = True
            for watcher in watchers:
                watcher.cancel()
            await chat.shadows.drain()
            await app.state.routes.router.aclose()
            await limiter.aclose()
            await app.state.log.close()

    api = FastAPI(title="TuneLoop", version="0.1.0", lifespan=lifespan)
    mode = os.environ.get("TUNELOOP_AUTH") or config.auth or settings.auth
    auth = api.state.auth = Authenticator(resolve_mode(mode, settings.host))
    limiter = make_limiter(settings.redis_url or config.redis_url, settings.redis_failure or config.redis_failure)
    api.state.limiter = limiter  # write routes count against a key's rpm too (gateway.api.deps)
    api.state.settings = settings
    api.state.routes = Routes(config)
    api.state.started = int(time.time())
    api.state.draining = False
    errors.install(api)
    api.include_router(health.router)
    caller = [Depends(authenticated)]
    api.include_router(models.router, dependencies=caller)
    api.include_router(admin.router)
    _include_log_routers(api, caller)
    api.include_router(console.router)  # /ui/: its own sign-in (session cookie), the same tenancy

    @api.get("/metrics", include_in_schema=False)
    async def _metrics(request: Request) -> Response:
        if config.metrics_auth:  # any valid key (not only an admin's), or auth off
            who = await request.app.state.auth.principal(request.headers.get("authorization"))
            if who.key_id is None and not who.admin:
                raise AuthenticationFailed("/metrics needs an API key (metrics_auth is on).")
        return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)

    original_openapi = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            names = list(api.state.routes.config.models)
            api.openapi_schema = with_responses(with_chat_completions(original_openapi(), names), names)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    chat = ChatCompletions(api.state.routes, log_ref, settings.max_body_bytes, auth, limiter,
                           settings.max_messages)
    completions = TextCompletions(api.state.routes, log_ref, settings.max_body_bytes, auth, limiter)
    native = NativeResponses(api.state.routes, log_ref, settings.max_body_bytes, auth, limiter)
    translated = TranslatedResponses(api.state.routes, log_ref, settings.max_body_bytes, auth, limiter,
                                     settings.max_messages, shadows=chat.shadows)
    responses = ResponsesEndpoint(translated, native, api.state, auth, settings.max_body_bytes)
    return Gateway(api, chat, responses, completions)


# Routers of the data beside the log: imported plainly, so a broken module fails at start.
def _include_log_routers(api: FastAPI, dependencies: list[Any]) -> None:
    from gateway.api import feedback, files, fine_tuning, models_admin, stored, stored_responses

    for module in (stored, stored_responses, feedback, files, fine_tuning, models_admin):
        api.include_router(module.router, dependencies=dependencies)
