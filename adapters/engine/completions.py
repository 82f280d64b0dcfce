"""vLLM's legacy Completions API, ``POST /v1/completions``: a request translated for the engine.

The request (``protocol_completions.py``) is checked with chat's bounds, its prompts tokenized (strings
with the tokenizer's special tokens unless ``add_special_tokens`` is false; token ids checked against the
vocabulary), cut by ``truncate_prompt_tokens`` (``truncation_side``), and every prompt checked against
the context (``max_tokens``, 16 by default, counts) and the KV budget before any is queued; a bad value is
a 400 naming its field.  Each prompt then runs as its own engine request with the same sampling
parameters and adapter (``model``: the base or a loaded adapter, else a 404), in the same scheduler as
chat, and the replies are built by ``completion_replies.py``.  ``response_format`` / ``guided_json``
constrain the text as for chat (``structured.py``).  A client that disconnects aborts every prompt's
request.
"""

from __future__ import annotations

import asyncio
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from adapters.engine import completion_replies as R
from adapters.engine import replies
from adapters.engine.admission import tenant_of
from adapters.engine.engine import Engine, RequestStream
from adapters.engine.protocol_completions import DEFAULT_MAX_TOKENS, CompletionRequest
from adapters.engine.protocol_sampling import RequestError


def register_completion_routes(app: FastAPI, engine: Engine, prompt_tokens_details: bool) -> None:
    from adapters.engine.server import TENANT_HEADER, _body, _param, _short, error_response  # server.py imports us

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await _body(request)
        try:
            req = CompletionRequest.model_validate(body)
            req.check()
            job = await prepare(engine, req, prompt_tokens_details)
        except (ValidationError, ValueError) as exc:
            return error_response(_short(exc), 400, param=_param(exc))
        merged = R.Merged(start(engine, job, tenant_of(request.headers.get(TENANT_HEADER), req.user)))
        if req.stream:
            return StreamingResponse(R.sse(job, merged), media_type="text/event-stream")
        return await R.complete(request, job, merged)


async def prepare(engine: Engine, req: CompletionRequest, details: bool) -> R.Job:
    """Everything a checked request needs to run; raises a 400 (or the model's 404) before anything is queued."""
    vocab = int(engine.model.lm_head.shape[0])
    req.check_vocab(vocab)
    grammar = None
    if engine.structured.asks(req):  # compiling may take a while: a thread
        grammar = await asyncio.to_thread(engine.structured.grammar_for, req)
    adapter = engine.resolve_model(req.model)
    prompts = await asyncio.to_thread(encode, engine, req, vocab)
    params = engine.generation.apply(req, req.sampling(default_max=DEFAULT_MAX_TOKENS, grammar=grammar))
    for ids, _ in prompts:
        engine.check_lengths(ids, params, True, "prompt")
        engine.check_kv(ids, params)
    opts = req.stream_options
    shapes = [replies.Shape(req.model or engine.model_name, ids, params.n, logprobs=req.logprobs is not None,
                            include_usage=bool(opts and opts.include_usage),
                            continuous=bool(opts and opts.continuous_usage_stats), details=details,
                            echo="" if req.return_token_ids else text, token_ids=bool(req.return_token_ids))
              for ids, text in prompts]
    return R.Job(f"cmpl-{req.request_id or uuid.uuid4().hex}", shapes, params, adapter, engine.tokenizer,
                 echo=req.echo, echo_only=req.echo_only, top=req.logprobs)


def encode(engine: Engine, req: CompletionRequest, vocab: int) -> list[tuple[list[int], str]]:
    """Each prompt's token ids (cut as ``truncate_prompt_tokens`` says) and the text ``echo`` gives back."""
    from adapters.engine.server import truncated  # server.py imports us

    out = []
    for prompt in req.prompts():
        if isinstance(prompt, str):
            with engine.template._encode_lock:  # a fast tokenizer's encode is not thread-safe (template.py)
                ids = [int(i) for i in engine.tokenizer.encode(prompt, add_special_tokens=req.add_special_tokens)]
        else:
            ids = prompt
            if any(t >= vocab for t in ids):
                raise RequestError(f"Token id {max(ids)} is out of vocabulary (size {vocab}).", "prompt")
        right = req.truncation_side == "right"  # keep the first tokens, not the last
        kept = truncated(ids[::-1] if right else ids, req.truncate_prompt_tokens, engine.max_model_len)
        kept = kept[::-1] if right else kept
        if not kept:
            raise RequestError("The decoder prompt cannot be empty", "prompt")
        out.append((kept, prompt if isinstance(prompt, str) and kept == ids else engine.tokenizer.decode(kept)))
    return out


def start(engine: Engine, job: R.Job, tenant: str) -> list[RequestStream]:
    """Queue every prompt's request (``{id}-{i}``); if one cannot start, abort those that did."""
    streams: list[RequestStream] = []
    try:
        for i, shape in enumerate(job.shapes):
            streams.append(engine.generate(shape.prompt, job.params, job.adapter, f"{job.id}-{i}", tenant))
    except BaseException:
        for s in streams:
            s.abort()
        raise
    return streams
