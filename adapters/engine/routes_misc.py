"""The small routes vLLM's OpenAI server has besides inference (``entrypoints/openai/api_server.py``).

* ``GET /version``: ``{"version": ...}``, this package's version.
* ``POST /tokenize``: vLLM's ``TokenizeRequest``: ``prompt`` (+ ``add_special_tokens``, default true) or
  ``messages`` (+ ``add_generation_prompt``, ``continue_final_message``, ``chat_template``,
  ``chat_template_kwargs``, ``tools``, ``add_special_tokens`` default false), rendered by the same chat
  template path as chat completions; ``return_token_strs``.  Answers
  ``{"count", "max_model_len", "tokens", "token_strs"}`` (``token_strs`` null unless asked for).
* ``POST /detokenize``: ``{"tokens": [...]}`` -> ``{"prompt": "..."}``; an id outside the tokenizer's
  vocabulary is a 400.
* ``GET /v1/models/{id}``: the card ``/v1/models`` lists for the base or a loaded adapter, else a 404
  ``model_not_found`` (OpenAI's ``retrieve``; ids may hold ``/``).
* ``GET|POST /ping`` (SageMaker's health check): 200 while the engine is healthy, else 503.
* ``POST /invocations`` (SageMaker): a body with ``messages`` goes to ``/v1/chat/completions``, else one
  with ``prompt`` to ``/v1/completions`` (400 while this engine has no such route), else a 400; vLLM
  tries its request types in that order.

A ``model`` that names neither the base nor a loaded adapter is a 404 on tokenize and detokenize, as in
vLLM (the LoRA resolver may load it first, ``resolver.py``).  The API key (``guard.py``) covers all but
``/version`` and ``/ping``, vLLM's public endpoints.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.engine import protocol as P
from adapters.engine.engine import Engine, EngineError
from adapters.engine.tools import ToolRequest


class TokenizeCompletion(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChat(P.ChatCompletionRequest):
    add_special_tokens: bool = False
    return_token_strs: bool | None = False


class Detokenize(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    tokens: list[int]


def version() -> str:
    try:
        return importlib.metadata.version("tuneloop")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def register_misc_routes(app: FastAPI, engine: Engine) -> None:
    from adapters.engine.server import _body, _json, _param, _short, error_response  # server.py imports us

    tok = engine.tokenizer

    def encode(text: str, special: bool) -> list[int]:
        with engine.template._encode_lock:  # a fast tokenizer's encode is not thread-safe (template.py)
            return [int(i) for i in tok.encode(text, add_special_tokens=special)]

    async def tokenize_chat(req: TokenizeChat) -> list[int]:
        try:
            messages = P.normalize_messages(req.messages)
            tools = ToolRequest.of(req, True)
        except ValueError as exc:
            raise EngineError(str(exc), param=getattr(exc, "param", None) or "messages") from exc
        ids = await engine.encode_chat(req, messages, tools.tools if tools else None)
        if req.add_special_tokens:  # vLLM tokenizes the rendered text with the tokenizer's special tokens
            text = tok.decode(ids, skip_special_tokens=False)
            ids = await asyncio.to_thread(encode, text, True)
        return ids

    @app.get("/version")
    async def get_version() -> Response:
        return _json({"version": version()})

    @app.api_route("/ping", methods=["GET", "POST"])
    async def ping() -> Response:
        return Response(status_code=200 if engine.healthy else 503)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        body = await _body(request)
        try:
            req: TokenizeChat | TokenizeCompletion
            if "messages" in body:
                req = TokenizeChat.model_validate(body)
            elif "prompt" in body:
                req = TokenizeCompletion.model_validate(body)
            else:
                return error_response("Either `prompt` or `messages` must be provided.", 400)
        except (ValidationError, ValueError) as exc:
            return error_response(_short(exc), 400, param=_param(exc))
        engine.resolve_model(req.model)
        if isinstance(req, TokenizeChat):
            ids = await tokenize_chat(req)
        else:
            ids = await asyncio.to_thread(encode, req.prompt, req.add_special_tokens)
        strs = tok.convert_ids_to_tokens(ids) if req.return_token_strs else None
        return _json({"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids, "token_strs": strs})

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Response:
        try:
            req = Detokenize.model_validate(await _body(request))
        except ValidationError as exc:
            return error_response(_short(exc), 400, param=_param(exc))
        engine.resolve_model(req.model)
        vocab = len(tok)
        bad = [t for t in req.tokens if not 0 <= t < vocab]
        if bad:
            return error_response(f"Token id {bad[0]} is out of vocabulary (size {vocab}).", 400, param="tokens")
        return _json({"prompt": await asyncio.to_thread(tok.decode, req.tokens)})

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> Response:
        if model_id == engine.model_name:
            return _json(P.model_card(engine.model_name, engine.created, engine.model_root, None,
                                      engine.max_model_len))
        path = engine.adapters.paths.get(model_id)
        if path is None:
            return error_response(f"The model `{model_id}` does not exist.", 404, code="model_not_found",
                                  param="model")
        return _json(P.model_card(model_id, engine.adapters.created.get(model_id, engine.created), str(path),
                                  engine.adapters.parents.get(model_id, engine.model_name), engine.max_model_len))

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await _body(request)  # cached by Starlette: the route called below reads it again
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions" if "prompt" in body else None
        endpoint = _post_endpoint(app, path) if path else None
        if endpoint is None:
            kinds = "a chat completion (messages)" + (" or a completion (prompt)" if _post_endpoint(
                app, "/v1/completions") else "; completions (prompt) are unsupported by this engine")
            raise EngineError(f"Cannot find suitable handler for request. Expected {kinds}.")
        response: Response = await endpoint(request)
        return response


def _post_endpoint(app: FastAPI, path: str) -> Any:
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path == path and "POST" in (route.methods or ()):
            return route.endpoint
    return None
