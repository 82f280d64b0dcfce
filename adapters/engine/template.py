"""Chat messages -> prompt token ids, off the event loop, with ``chat_template_kwargs`` as an allow-list.

What a request may pass in ``chat_template_kwargs``: the variables the chat template reads
(``jinja2.meta.find_undeclared_variables``; for SmolLM2 only ``add_generation_prompt``) less the ones the
engine sets itself (``messages``, the special tokens, the template's helpers), plus
``add_generation_prompt``, ``continue_final_message`` and ``enable_thinking`` (booleans; a no-op where the
template does not read them, as in vLLM).  Anything else (``chat_template``, ``tokenize``, ``truncation``,
``max_length``, ``return_tensors``...: ``apply_chat_template``'s own arguments) is a 400 naming
``chat_template_kwargs.<key>``.  A request's own template (top-level ``chat_template`` or in the kwargs)
is refused with vLLM's message unless the engine runs with ``--trust-request-chat-template``.

Rendering follows ``transformers``' ``apply_chat_template`` (same context: the messages without
None-valued keys, ``tools``, ``documents``, ``add_generation_prompt``, the special tokens, the kwargs; the
same ``continue_final_message`` cut), then the text is tokenized without special tokens, so normal requests
get the ids ``tokenizer.apply_chat_template`` gives (a test checks this).  The model's template renders in
a worker thread (``jinja_sandbox.render``: sandbox, deadline, output limit); a request's template in a
child process that is killed at the deadline.  Both paths keep the engine's event loop free.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from typing import Any

import jinja2.meta

from adapters.engine.jinja_sandbox import TemplateLimit, environment, render
from adapters.engine.tools import tool_template

TIMEOUT_S = float(os.environ.get("TUNELOOP_ENGINE_TEMPLATE_TIMEOUT_S", "2"))  # per render, either path
CHILD_MEMORY_BYTES = 1 << 30
CHILD_STARTUP_S = 3.0  # the child's own start (python + jinja2), on top of the render's deadline
FLAGS = ("add_generation_prompt", "continue_final_message", "enable_thinking")
RESERVED = {"messages", "chat_template", "tools", "documents", "bos_token", "eos_token", "unk_token",
            "pad_token", "sep_token", "cls_token", "mask_token", "additional_special_tokens", "raise_exception",
            "strftime_now", "range", "dict", "namespace", "lipsum", "cycler", "joiner"}
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
UNTRUSTED = ("Chat template is passed with request, but --trust-request-chat-template is not set. "
             "Refused request with untrusted chat template.")


class TemplateError(ValueError):
    """A 400: the request's template input, or the render, failed (``param`` names the culprit)."""

    def __init__(self, message: str, param: str | None = "messages", code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def template_variables(source: str) -> set[str]:
    return set(jinja2.meta.find_undeclared_variables(environment().parse(source)))


class ChatTemplate:
    def __init__(self, tokenizer: Any, max_model_len: int, trust_request_template: bool = False,
                 timeout_s: float = TIMEOUT_S):
        self.tok = tokenizer
        self.source: str = tokenizer.chat_template
        self.trust = trust_request_template
        self.timeout_s = timeout_s
        self.special = dict(tokenizer.special_tokens_map)
        self.allowed = (template_variables(self.source) - RESERVED) | set(FLAGS)
        # tools reach the model through its template; a ChatML template without them gets the Hermes one
        found = tool_template(tokenizer)
        self.tool_source: str | None = self.source if found == self.source else found  # same object: trusted
        longest = max(len(t) for t in tokenizer.get_vocab())
        self.max_chars = max_model_len * longest  # longer text cannot fit the context, whatever it holds
        self._encode_lock = threading.Lock()
        self._children = asyncio.Semaphore(4)

    # -- checks (before any work) --------------------------------------------------------
    def context(self, messages: list[dict[str, Any]], kwargs: dict[str, Any] | None, request_template: str | None,
                add_generation_prompt: bool, explicit_agp: bool, continue_final: bool,
                tools: list[dict[str, Any]] | None = None) -> tuple[str, dict[str, Any], bool]:
        """``(source, context, continue_final)`` for :meth:`encode`; raises :class:`TemplateError`."""
        kwargs = dict(kwargs or {})
        source = self._source(request_template, kwargs.pop("chat_template", None))
        if tools and source is self.source:
            if self.tool_source is None:
                raise TemplateError("This model's chat template has no tool support (it does not read `tools` and "
                                    "is not ChatML, which the Hermes tool template needs).", "tools")
            source = self.tool_source
        allowed = self.allowed if source is self.source else (template_variables(source) - RESERVED) | set(FLAGS)
        for key, value in kwargs.items():
            if key not in allowed:
                raise TemplateError(f"chat_template_kwargs.{key} is not a variable of this model's chat template "
                                    f"(allowed: {', '.join(sorted(allowed))}).", f"chat_template_kwargs.{key}")
            if key in FLAGS and not isinstance(value, bool):
                raise TemplateError(f"chat_template_kwargs.{key} must be a boolean.", f"chat_template_kwargs.{key}")
        continue_final = bool(kwargs.pop("continue_final_message", continue_final))
        agp_explicit = "add_generation_prompt" in kwargs or explicit_agp
        agp = bool(kwargs.pop("add_generation_prompt", add_generation_prompt))
        if continue_final and agp:
            if agp_explicit:
                raise TemplateError("Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                                    "continue_final_message")
            agp = False
        chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
        if continue_final:
            chat = self._tag_final(chat, source)
        ctx = {**self.special, **kwargs, "messages": chat, "tools": tools or None, "documents": None,
               "add_generation_prompt": agp}
        return source, ctx, continue_final

    def _source(self, top_level: str | None, in_kwargs: Any) -> str:
        given = top_level if top_level is not None else in_kwargs
        if given is None:
            return self.source
        param = "chat_template" if top_level is not None else "chat_template_kwargs.chat_template"
        if not self.trust:
            raise TemplateError(UNTRUSTED, param)
        if not isinstance(given, str):
            raise TemplateError("chat_template must be a string.", param)
        try:
            environment().parse(given)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"Cannot parse the chat template: {exc}", param) from exc
        return given

    @staticmethod
    def _tag_final(chat: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        final = chat[-1].get("content")
        if not isinstance(final, str):
            raise TemplateError('continue_final_message is set but the final message has no "content" to continue!')
        if "content" not in source:
            raise TemplateError('continue_final_message is set to "content" but this is not an accepted field in '
                                "the chat_template")
        return chat[:-1] + [{**chat[-1], "content": final + CONTINUE_TAG}]

    # -- rendering and tokenizing (off the event loop) ----------------------------------
    async def encode(self, source: str, ctx: dict[str, Any], continue_final: bool) -> list[int]:
        ours = source is self.source or source is self.tool_source  # the model's or ours: rendered in a thread
        param = "messages" if ours else "chat_template"
        if ours:
            text = await asyncio.to_thread(self._render_here, source, ctx, param)
        else:
            text = await self._render_child(source, ctx, param)
        if continue_final:
            text = _cut_at_tag(text, ctx["messages"][-1]["content"].removesuffix(CONTINUE_TAG))
        return await asyncio.to_thread(self._tokenize, text)

    def _render_here(self, source: str, ctx: dict[str, Any], param: str) -> str:
        try:
            return render(source, ctx, self.timeout_s, self.max_chars)
        except TemplateLimit as exc:
            raise self._limit_error(exc.kind, str(exc), param) from exc
        except RecursionError as exc:
            raise TemplateError("Cannot apply the chat template: it recursed too deeply.", param) from exc
        except Exception as exc:  # jinja errors on malformed messages are the client's
            raise TemplateError(f"Cannot apply the chat template: {exc}", param) from exc

    async def _render_child(self, source: str, ctx: dict[str, Any], param: str) -> str:
        job = json.dumps({"source": source, "context": ctx, "timeout_s": self.timeout_s,
                          "max_chars": self.max_chars, "memory_bytes": CHILD_MEMORY_BYTES}).encode()
        async with self._children:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapters.engine.jinja_sandbox", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(job), self.timeout_s + CHILD_STARTUP_S)
            except TimeoutError:
                raise self._limit_error("timeout", f"The chat template took longer than {self.timeout_s:g} s to "
                                        "render.", param) from None
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        try:
            result = json.loads(out)
        except ValueError:
            raise TemplateError(f"The chat template's renderer exited with {proc.returncode}.", param) from None
        if "error" in result:
            raise self._limit_error(result["kind"], result["error"], param)
        return result["text"]

    def _limit_error(self, kind: str, message: str, param: str) -> TemplateError:
        if kind == "size":
            return TemplateError(f"{message} No prompt that long fits this model's context.", param,
                                 "context_length_exceeded")
        if kind == "error":
            return TemplateError(f"Cannot apply the chat template: {message}", param)
        return TemplateError(message, param)

    def _tokenize(self, text: str) -> list[int]:
        with self._encode_lock:
            return [int(i) for i in self.tok.encode(text, add_special_tokens=False)]


def _cut_at_tag(text: str, final: str) -> str:
    """transformers' ``continue_final_message``: end the prompt where the final message's text ends."""
    if final.strip() not in text or CONTINUE_TAG.strip() not in text:
        raise TemplateError("continue_final_message is set but the final message does not appear in the chat after "
                            "applying the chat template!")
    loc = text.rindex(CONTINUE_TAG.strip())
    return text[:loc] if text[loc : loc + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:loc].rstrip()
