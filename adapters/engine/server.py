"""The engine's HTTP API: vLLM's OpenAI-compatible contract (see shared CONTRACTS.md section 7).

Routes: ``POST /v1/chat/completions`` (stream and not), ``POST /v1/completions`` (vLLM's legacy
completions, stream and not: ``completions.py``), ``GET /v1/models``, ``GET /health``, ``GET /metrics``;
``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` when runtime LoRA updating is on
(``routes_lora.py``); ``/version``, ``/tokenize``, ``/detokenize``, ``/v1/models/{id}``, ``/ping``,
``/invocations`` (``routes_misc.py``).  Handlers are thin: parse, call :class:`Engine`, serialize.
Every error leaves through :func:`error_response` in OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` with a string ``code``.

Inference runs in the engine's scheduler thread, chat templates in worker threads
or processes (``template.py``); this event loop only moves text.  A streaming
client that disconnects aborts its request at once (its KV rows are freed before
the next decode step); so does a non-streaming one.

Every bad value is a 400 before anything is queued: the protocol's bounds,
``chat_template_kwargs`` outside the allow-list, an empty prompt, a prompt beyond
the context, a request that could not fit the KV budget even alone.  The tenant
for fair queueing is the ``x-tuneloop-tenant`` header (the gateway sets it), else
the body's ``user``.  If the scheduler thread dies, the server stops and
:func:`run_engine` exits with status 1, for a supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from adapters.engine import protocol as P
from adapters.engine import replies
from adapters.engine.admission import tenant_of
from adapters.engine.completions import register_completion_routes
from adapters.engine.engine import Engine, EngineError
from adapters.engine.guard import ApiKeyMiddleware, LoraRoots, inherited_socket, watch_parent
from adapters.engine.routes_lora import register_lora_routes
from adapters.engine.routes_misc import register_misc_routes
from adapters.engine.tools import ToolRequest

log = logging.getLogger(__name__)

TENANT_HEADER = "x-tuneloop-tenant"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(message: str, status: int, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None) -> Response:
    code = code or {400: "invalid_request_error", 404: "not_found"}.get(status, "internal_error")
    return _json({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def create_engine_app(engine: Engine, lora_roots: LoraRoots | None = None,
                      prompt_tokens_details: bool = False, runtime_lora_updating: bool | None = None) -> FastAPI:
    """The FastAPI app over a started or not-yet-started engine (started on app startup).

    ``lora_roots``: the folders ``load_lora_adapter`` may read (``guard.py``; ``run_engine`` always
    sets them; None, for an engine embedded in a test, reads any path). ``prompt_tokens_details``:
    usage says how many prompt tokens came from the prefix cache (vLLM's
    ``--enable-prompt-tokens-details``). ``runtime_lora_updating``: serve the load/unload routes (None: as
    ``$VLLM_ALLOW_RUNTIME_LORA_UPDATING`` says)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not engine.scheduler.thread.is_alive() and engine.scheduler.dead is None:
            engine.start()
        yield
        engine.stop()

    app = FastAPI(title="TuneLoop engine", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> Response:
        return error_response(exc.message, exc.status, exc.type, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        param = ".".join(str(x) for x in errs[0].get("loc", ())[1:]) if errs else None
        msg = "; ".join(str(e.get("msg")) for e in errs) or "invalid request"
        return error_response(msg, 400, param=param or None)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if engine.healthy else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> Response:
        base = P.model_card(engine.model_name, engine.created, engine.model_root, None, engine.max_model_len)
        cards = [base] + [
            P.model_card(name, engine.adapters.created.get(name, engine.created), str(path),
                         engine.adapters.parents.get(name, engine.model_name), engine.max_model_len)
            for name, path in list(engine.adapters.paths.items())
        ]
        return _json({"object": "list", "data": cards})

    register_lora_routes(app, engine, lora_roots, runtime_lora_updating)  # routes_lora.py

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await _body(request)
        try:
            req = P.ChatCompletionRequest.model_validate(body)
            req.check()
            req.check_vocab(int(engine.model.lm_head.shape[0]))
            messages = P.normalize_messages(req.messages)
            tools = ToolRequest.of(req, engine.auto_tools)
            tool_grammar = tools.grammar() if tools else None
            grammar = None
            if tool_grammar is not None or engine.structured.asks(req):  # compiling may take a while: a thread
                grammar = await asyncio.to_thread(engine.structured.grammar_for, req, tool_grammar)
        except (ValidationError, ValueError) as exc:
            return error_response(_short(exc), 400, param=_param(exc))
        adapter = engine.resolve_model(req.model)
        prompt = truncated(await engine.encode_chat(req, messages, tools.tools if tools else None),
                           req.truncate_prompt_tokens, engine.max_model_len)
        explicit = req.requested_max() is not None
        default_max = engine.budget.default_max_tokens(len(prompt), req.n or 1)
        params = engine.generation.apply(req, req.sampling(default_max=default_max, grammar=grammar))
        engine.check_lengths(prompt, params, explicit)
        model = req.model or engine.model_name
        tenant = tenant_of(request.headers.get(TENANT_HEADER), req.user)
        stream = engine.generate(prompt, params, adapter, req.request_id, tenant)
        opts = req.stream_options or P.StreamOptions()
        shape = replies.Shape(
            model, prompt, params.n, logprobs=params.logprobs is not None,
            calls=tools is not None and tools.parses, constrained=tool_grammar is not None,
            include_usage=bool(opts.include_usage), continuous=bool(opts.continuous_usage_stats),
            details=prompt_tokens_details, echo=P.last_text(messages) if req.echo else "",
            token_ids=bool(req.return_token_ids))
        if req.stream:
            return StreamingResponse(replies.sse(stream, shape), media_type="text/event-stream")
        return await replies.complete(request, stream, shape)

    register_completion_routes(app, engine, prompt_tokens_details)  # completions.py
    register_misc_routes(app, engine)  # routes_misc.py
    return app


def truncated(prompt: list[int], keep: int | None, max_model_len: int) -> list[int]:
    """vLLM's ``truncate_prompt_tokens``: the prompt's last ``keep`` tokens (-1: the model's length)."""
    if keep is None:
        return prompt
    keep = max_model_len if keep == -1 else keep
    if keep > max_model_len:
        raise EngineError(f"truncate_prompt_tokens value ({keep}) is greater than max_model_len ({max_model_len}). "
                          "Please, select a smaller truncation size.", param="truncate_prompt_tokens")
    return prompt[-keep:] if keep else []


async def _body(request: Request) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":  # vLLM: 415 for anything but JSON
        raise EngineError("Unsupported Media Type: Only 'application/json' is allowed", 415)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise EngineError(f"Invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise EngineError("The request body must be a JSON object.")
    return body


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)


def _param(exc: Exception) -> str | None:
    if isinstance(exc, ValidationError) and exc.errors():
        return ".".join(str(x) for x in exc.errors()[0]["loc"]) or None
    return getattr(exc, "param", None)


def run_engine(*, host: str = "127.0.0.1", port: int = 8001, adapters_dir: Path | None = None,
               home: Path | None = None, max_loras: int = 8, max_cpu_loras: int = 64,
               max_batch: int = 32, threads: int | None = None, device: str | None = None,
               kv_cache_memory_bytes: int | None = None, trust_request_chat_template: bool = False,
               scheduling_policy: str = "fair", max_running_per_tenant: int | None = None,
               enable_auto_tool_choice: bool = False, tool_call_parser: str | None = None,
               api_key: str | None = None, allowed_lora_roots: list[Path] | None = None, fd: int | None = None,
               parent_pid: int | None = None, enable_prompt_tokens_details: bool = False, **model: Any) -> None:
    """Load the model, then serve vLLM's HTTP contract until interrupted (blocking).

    ``model``: the base model's options for :class:`Engine` (``model``, ``served_model_name``,
    ``generation_config``, ``max_model_len``, ``enable_lora``, ``max_lora_rank``, ``lora_modules``).

    Exits with status 1 when the scheduler thread died (the server stops first, so the requests it
    failed get their errors), so that a supervisor restarts the engine.  ``api_key``,
    ``allowed_lora_roots``, ``fd`` and ``parent_pid``: see ``guard.py``."""
    import uvicorn

    from adapters.engine.flags import check_flags
    from adapters.engine.model import default_home

    check_flags(scheduling_policy, tool_call_parser, enable_auto_tool_choice)
    logging.basicConfig(level=os.environ.get("TUNELOOP_LOG_LEVEL", "INFO"))
    home = Path(home) if home else default_home()
    engine = Engine(home=home, adapters_dir=adapters_dir, max_loras=max_loras,
                    max_cpu_loras=max_cpu_loras, max_batch=max_batch, threads=threads, device=device,
                    kv_cache_memory_bytes=kv_cache_memory_bytes,
                    trust_request_chat_template=trust_request_chat_template, scheduling_policy=scheduling_policy,
                    max_running_per_tenant=max_running_per_tenant, enable_auto_tool_choice=enable_auto_tool_choice,
                    **model)
    if trust_request_chat_template:
        log.warning("--trust-request-chat-template: requests may bring their own chat template (rendered in a "
                    "sandboxed child process)")
    roots = LoraRoots([home / "adapters", *([adapters_dir] if adapters_dir else []), *(allowed_lora_roots or [])])
    app: Any = create_engine_app(engine, roots, enable_prompt_tokens_details)
    api_key = api_key or os.environ.get("VLLM_API_KEY") or None
    if api_key:
        app = ApiKeyMiddleware(app, api_key)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5))

    def on_death(exc: BaseException) -> None:
        log.critical("the scheduler died (%s): stopping the engine", exc)
        server.should_exit = True

    engine.scheduler.on_death = on_death
    if parent_pid is not None:
        watch_parent(parent_pid, lambda: setattr(server, "should_exit", True))
    server.run(sockets=[inherited_socket(fd)] if fd is not None else None)
    if engine.scheduler.dead is not None:
        raise SystemExit(1)
