"""The engine facade: model, tokenizer, adapters and the scheduler thread, with an asyncio API.

Device and numbers (see ``loadtests/results/engine.md``):

* CUDA when available (bf16), otherwise CPU in **fp32**.  On CPU, bf16 made
  mixed-adapter batches diverge from single-request outputs; fp32 keeps a
  request's greedy output independent of its batch-mates, which the tests check.
* CPU threads: ``threads`` or ``TUNELOOP_ENGINE_THREADS``; by default one torch
  thread per two cores (1 on a 2-core machine).  The engine shares the machine
  with the gateway and other processes; with 2 threads on 2 busy cores torch's
  thread pool collapsed (11 tok/s) while 1 thread held 146 tok/s at batch 32.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch

from adapters.engine.admission import SHARED_TENANT, KVBudget, default_kv_bytes
from adapters.engine.forward import BatchedLlama
from adapters.engine.lora import AdapterRegistry
from adapters.engine.metrics import EngineMetrics
from adapters.engine.model import default_home, open_served_model
from adapters.engine.prefix import BLOCK
from adapters.engine.protocol import ChatCompletionRequest
from adapters.engine.resolver import FilesystemResolver
from adapters.engine.sampling import SamplingParams
from adapters.engine.scheduler import Request, Scheduler
from adapters.engine.structured import Structured
from adapters.engine.template import ChatTemplate, TemplateError

log = logging.getLogger(__name__)


def default_threads() -> int:
    env = os.environ.get("TUNELOOP_ENGINE_THREADS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) // 2)


def pick_device(device: str | None) -> tuple[torch.device, torch.dtype]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


class EngineError(Exception):
    """Raised to the HTTP layer with a status code."""

    def __init__(self, message: str, status: int = 400, type_: str = "invalid_request_error",
                 code: str | None = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.message, self.status, self.type, self.code, self.param = message, status, type_, code, param


class RequestStream:
    """Events of one request, delivered to the event loop: token deltas, then ``done``."""

    def __init__(self, engine: Engine, req: Request, queue: asyncio.Queue[dict[str, Any]]):
        self.engine, self.req, self.queue = engine, req, queue
        self.finished = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[dict[str, Any]]:
        while not self.finished:
            ev = await self.queue.get()
            if ev.get("done") or "error" in ev:
                self.finished = True
            yield ev

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            self.engine.scheduler.abort(self.req)


class Engine:
    """``model``: a local HF checkpoint folder (vLLM's ``--model``; None: the embedded SmolLM2), served as
    ``served_model_name``; ``lora_modules``: ``(name, path, base_model_name)`` loaded at start."""

    def __init__(self, home: Path | None = None, adapters_dir: Path | None = None, max_loras: int = 8,
                 max_cpu_loras: int = 64, max_batch: int = 32, threads: int | None = None,
                 device: str | None = None, kv_cache_memory_bytes: int | None = None, model: str | Path | None = None,
                 served_model_name: str | None = None, generation_config: str | None = None,
                 max_model_len: int | None = None, enable_lora: bool | None = None, max_lora_rank: int = 16,
                 lora_modules: list[tuple[str, Path, str | None]] | None = None, chat_template: str | None = None,
                 trust_request_chat_template: bool = False, scheduling_policy: str = "fair",
                 max_running_per_tenant: int | None = None, enable_auto_tool_choice: bool = False):
        self.device, self.dtype = pick_device(device)
        self.auto_tools = enable_auto_tool_choice  # vLLM's --enable-auto-tool-choice (parser: hermes)
        if self.device.type == "cpu":
            torch.set_num_threads(threads or default_threads())
        self.threads = torch.get_num_threads()
        self.created = int(time.time())
        served = open_served_model(model, served_model_name, generation_config, max_model_len, home or default_home(),
                                   chat_template)
        self.model_name, self.model_root, self.generation = served.name, served.root, served.generation
        self.tokenizer = served.ckpt.tokenizer
        self.model = BatchedLlama(served.ckpt, self.dtype, self.device, served.max_len)
        bpp = self.model.cache.bytes_per_position()
        self.budget = KVBudget(kv_cache_memory_bytes or default_kv_bytes(self.device), bpp, self.model.n_layers,
                               self.model.max_len)
        self.max_model_len = self.budget.max_model_len  # what one row of the KV budget can hold, at most
        self.template = ChatTemplate(self.tokenizer, self.max_model_len, trust_request_chat_template)
        self.structured = Structured(self.tokenizer, int(self.model.lm_head.shape[0]))
        self.metrics = EngineMetrics(self.model_name, self.max_model_len)
        self.adapters = AdapterRegistry(self.model.lora_shapes, self.model.n_layers, self.dtype, self.device,
                                        max(max_cpu_loras, max_loras), max_rank=max_lora_rank,
                                        enabled=enable_lora if enable_lora is not None else model is None)
        cfg_eos = served.ckpt.config.eos_token_id
        eos = {*(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos]), self.tokenizer.eos_token_id}
        self.eos_ids = {int(e) for e in eos | served.generation.eos_ids if e is not None}
        self.scheduler = Scheduler(self.model, self.adapters, self.tokenizer, self.metrics, self.eos_ids,
                                   self.budget, max_batch=max_batch, max_loras=max_loras,
                                   prefix_positions=min(8192, self.budget.positions // 4),
                                   fair=scheduling_policy == "fair", max_running_per_tenant=max_running_per_tenant)
        self.metrics.set_cache_config(BLOCK, self.budget.positions // BLOCK, self.budget.limit_bytes,
                                      self.scheduler.prefix.max_positions > 0)
        if adapters_dir is not None:
            self._load_dir(Path(adapters_dir))
        for name, path, parent in lora_modules or []:
            self.adapters.add(name, Path(path).expanduser(), int(time.time()), parent)
        self._update_lora_gauges()
        self.resolver = FilesystemResolver.from_env(self, served.root, served.ckpt.path)  # resolver.py
        log.info("engine ready: %s on %s/%s, %d threads, %d adapters", self.model_name, self.device,
                 self.dtype, self.threads, len(self.adapters.names()))
        log.info("KV cache: budget %d bytes (%d positions of %d B, context %d), prefix cache up to %d bytes; "
                 "scheduling %s, at most %s running rows per tenant while others wait", self.budget.limit_bytes,
                 self.budget.positions, bpp, self.max_model_len, self.scheduler.prefix.max_positions * bpp,
                 scheduling_policy, self.scheduler.waiting.cap)

    def _load_dir(self, root: Path) -> None:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if (sub / "adapter_config.json").is_file():
                self.adapters.add(sub.name, sub.resolve(), int(time.time()))

    def _update_lora_gauges(self) -> None:
        m = self.metrics
        m.loras_held.set(len(self.adapters.held()))
        m.loras_registered.set(len(self.adapters.names()))
        m.lora_loads.set(self.adapters.loads)
        m.lora_evictions.set(self.adapters.evictions)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    @property
    def healthy(self) -> bool:
        return self.scheduler.dead is None and self.scheduler.thread.is_alive()

    # -- adapters --------------------------------------------------------------------
    def add_adapter(self, name: str, path: Path, inplace: bool = False) -> None:
        """Register an adapter; with ``inplace`` (vLLM's ``load_inplace``) replace one of the same name."""
        if inplace and name in self.adapters:
            self.adapters.replace(name, Path(path), int(time.time()))
        else:
            self.adapters.add(name, Path(path), int(time.time()))
        self._update_lora_gauges()

    def remove_adapter(self, name: str) -> None:
        self.adapters.remove(name)
        self._update_lora_gauges()

    def resolve_model(self, model: str | None) -> str | None:
        """The adapter a ``model`` names (None for the base model); 404 when unknown."""
        if model is None or model == self.model_name:
            return None
        if model in self.adapters or (self.resolver is not None and self.resolver.resolve(model)):
            return model
        raise EngineError(f"The model `{model}` does not exist.", 404, "invalid_request_error", "model_not_found",
                          "model")

    # -- requests --------------------------------------------------------------------
    async def encode_chat(self, req: ChatCompletionRequest, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt's token ids: the chat template rendered off the event loop (``template.py``)."""
        try:
            source, ctx, cont = self.template.context(
                messages, req.chat_template_kwargs, req.chat_template, req.add_generation_prompt,
                "add_generation_prompt" in req.model_fields_set, req.continue_final_message, tools)
            ids = await self.template.encode(source, ctx, cont)
        except TemplateError as exc:
            raise EngineError(str(exc), param=exc.param, code=exc.code or "invalid_request_error") from exc
        if not ids:
            raise EngineError("The decoder prompt cannot be empty", param="messages")
        return ids

    def check_lengths(self, prompt: list[int], params: SamplingParams, explicit_max: bool,
                      param: str = "messages") -> None:
        """A 400 naming ``param`` (the prompt's field) for a prompt (plus an explicit ``max_tokens``) beyond
        the context."""
        limit = self.max_model_len
        if len(prompt) >= limit or (explicit_max and len(prompt) + params.max_tokens > limit):
            raise EngineError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{len(prompt) + (params.max_tokens if explicit_max else 0)} tokens ({len(prompt)} in the "
                f"{param}, {params.max_tokens if explicit_max else 0} in the completion). Please reduce the "
                f"length of the {param} or completion.", param=param, code="context_length_exceeded")

    def check_kv(self, prompt: list[int], params: SamplingParams) -> None:
        """A 400 for a request that could not fit the KV budget even on an idle engine."""
        why = self.budget.refusal(params.n, len(prompt), params.max_tokens)
        if why is not None:
            raise EngineError(why, param="n" if params.n > 1 else "max_tokens", code="kv_cache_exceeded")

    def generate(self, prompt: list[int], params: SamplingParams, adapter: str | None,
                 request_id: str | None = None, tenant: str = SHARED_TENANT) -> RequestStream:
        if not self.healthy:
            raise EngineError("The engine is not running.", 503, "service_unavailable", "engine_dead")
        if params.n > self.scheduler.max_batch:
            raise EngineError(f"n must be at most {self.scheduler.max_batch} (the engine's max batch).", param="n")
        self.check_kv(prompt, params)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def sink(ev: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        req = Request(id=request_id or uuid.uuid4().hex, prompt=prompt, params=params, adapter=adapter, sink=sink,
                      tenant=tenant, worst=self.budget.worst(len(prompt), params.max_tokens))
        stream = RequestStream(self, req, queue)
        self.scheduler.submit(req)
        return stream
