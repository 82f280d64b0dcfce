"""vLLM's runtime LoRA API: ``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter``.

Registered only when runtime updating is on (``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, ``resolver.py``);
otherwise both paths are 404, as in vLLM, where the router is not included.  Statuses and messages are
vLLM's (``entrypoints/openai/serving_models.py``): success is a 200 ``text/plain`` line; a missing field or
an adapter already loaded (without ``load_inplace``) is a 400; no adapter at ``lora_path`` (no
``adapter_config.json``) is a 404 ``Loading lora X failed: No adapter found for PATH``; an adapter that
breaks a rule (rank above ``--max-lora-rank``, ``modules_to_save``, unsupported target modules, another
base's shapes) is a 400 naming it; unloading an unknown name is a 404.  ``lora_path`` must lie under
the engine's allowed roots (``guard.py``), else a 400 naming it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from adapters.engine.engine import Engine
from adapters.engine.guard import LoraRoots
from adapters.engine.lora import AdapterError, AdapterNotFound
from adapters.engine.resolver import runtime_lora_updating


def register_lora_routes(app: FastAPI, engine: Engine, lora_roots: LoraRoots | None,
                         enabled: bool | None = None) -> None:
    """Add the two routes when ``enabled`` (None: as the environment says)."""
    from adapters.engine.server import _body, error_response  # server.py imports this module

    if not (runtime_lora_updating() if enabled is None else enabled):
        return

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request) -> Response:
        body = await _body(request)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return error_response("Both 'lora_name' and 'lora_path' must be provided.", 400)
        try:
            if lora_roots is not None:
                lora_roots.check(str(path))
        except ValueError as exc:
            return error_response(str(exc), 400, param="lora_path")
        try:
            await asyncio.to_thread(engine.add_adapter, str(name), Path(str(path)), bool(body.get("load_inplace")))
        except AdapterError as exc:
            return error_response(str(exc), exc.status, param="lora_path" if exc.status == 404 else None)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request) -> Response:
        body = await _body(request)
        name = body.get("lora_name")
        if not name:
            return error_response("'lora_name' needs to be provided to unload a LoRA adapter.", 400)
        try:
            engine.remove_adapter(str(name))
        except AdapterNotFound:
            return error_response(f"The lora adapter '{name}' cannot be found.", 404, code="lora_not_found")
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")
