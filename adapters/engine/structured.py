"""Structured outputs: ``response_format`` JSON (and vLLM's ``guided_json``) by constrained decoding.

    grammar = structured.grammar_for(req)      # None: free text; raises RequestError (a 400) if unusable
                                               # (compiles: the server calls it in a worker thread)
    matcher = grammar.matcher()                # one per generated choice (Sequence)
    allowed = grammar.allowed(matcher)         # bool[vocab] for the next token
    matcher.consume_token(tok)                 # after sampling; is_stopped() once the value is complete

The grammar library is ``llguidance`` (the Rust engine behind Guidance, one of vLLM's
structured-output backends), chosen on measurements (``loadtests/grammar_libs.py``: a 20-property
schema, SmolLM2's 49k vocabulary, this CPU): it compiles the schema in ~1-3 ms cold and computes a
token mask in ~0.04 ms; xgrammar (vLLM's default) masks faster (~0.005 ms) but compiles ~10x slower
(~12 ms, paid by the first request of each new schema) and depends on torch, triton and tvm-ffi;
outlines-core indexes the whole vocabulary per schema (~2-3 s). Beside a decode step of tens of
milliseconds, both llguidance's and xgrammar's masks are noise; the compile and the footprint decide. Masks are
applied per row inside continuous batching, so constrained and free requests, with or without
adapters, share a batch.

``json_object`` is the schema ``{"type": "object"}``; ``json_schema`` compiles the given schema
(``strict`` or not: the reply always validates against it, as vLLM does). Whitespace between
JSON tokens is not allowed (``whitespace_flexible: false``): a small model otherwise pads its
JSON with newlines until ``max_tokens``. A schema the library cannot compile is a 400 naming
``response_format``. Compiled grammars are cached by their text (the newest 64); each choice
copies the cached matcher (``deep_copy``), so a repeated schema costs no compile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adapters.engine.protocol_sampling import RequestError, SamplingRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

COMPILE: JsonCompileOptions = {"whitespace_flexible": False}
CACHED = 64  # compiled grammars kept (a request's schema is usually one of a few)


class Structured:
    """Builds grammars for one tokenizer (its llguidance view is made once, on first use)."""

    def __init__(self, tokenizer: Any, vocab: int):
        self.tokenizer, self.vocab = tokenizer, vocab
        self._lt: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Grammar] = OrderedDict()

    @staticmethod
    def asks(req: SamplingRequest) -> bool:
        """Whether ``req`` asks for a JSON grammar (no compile: free-text requests skip :meth:`grammar_for`;
        a malformed ``response_format`` raises its 400 here)."""
        return _schema_of(req)[0] is not None

    def grammar_for(self, req: SamplingRequest, tool_grammar: str | None = None) -> Grammar | None:
        """The request's grammar: ``response_format`` / ``guided_json``, or ``tool_grammar`` (Lark, from
        ``tools.py``: ``tool_choice`` required or named); not both."""
        schema, param = _schema_of(req)
        if tool_grammar is not None:
            if schema is not None:
                raise RequestError(f"{param} cannot be combined with tool_choice required or a named function.",
                                   param)
            return self._compile(tool_grammar, "tools", "The tools' parameters")
        if schema is None:
            return None
        import llguidance

        try:
            text = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE)
        except (ValueError, TypeError) as exc:
            raise RequestError(f"Invalid JSON schema in {param}: {exc}", param) from exc
        return self._compile(text, param, f"The JSON schema in {param}")

    def _compile(self, text: str, param: str, what: str) -> Grammar:
        """The grammar's matcher, compiled once per grammar text (the newest ``CACHED`` are kept)."""
        import llguidance

        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        proto = llguidance.LLMatcher(self._tokenizer(), text, log_level=0)
        if proto.is_error():
            raise RequestError(f"{what} cannot be used for constrained decoding: {proto.get_error()}", param)
        grammar = Grammar(proto, self.vocab)
        with self._lock:
            self._cache[text] = grammar
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        return grammar

    def _tokenizer(self) -> Any:
        with self._lock:
            if self._lt is None:
                import llguidance.hf

                self._lt = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab)
            return self._lt


class Grammar:
    """A compiled grammar: a fresh matcher per generated choice (a copy of the one compiled with the
    request, off the scheduler's thread), and the mask of its next token."""

    def __init__(self, proto: Any, vocab: int):
        self.proto, self.vocab = proto, vocab

    def matcher(self) -> Any:
        return self.proto.deep_copy()

    def allowed(self, matcher: Any) -> torch.Tensor:
        bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little")[: self.vocab].astype(bool)
        return torch.from_numpy(mask)


def _schema_of(req: SamplingRequest) -> tuple[dict[str, Any] | None, str]:
    extra = req.model_extra or {}
    if extra.get("guided_json") is not None:
        schema = extra["guided_json"]
        if not isinstance(schema, dict):
            raise RequestError("guided_json must be a JSON schema (an object).", "guided_json")
        return schema, "guided_json"
    fmt = extra.get("response_format")
    if fmt is None:
        return None, "response_format"
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None, "response_format"
    if kind == "json_object":
        return {"type": "object"}, "response_format"
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError("response_format.json_schema.schema must be a JSON schema (an object).",
                               "response_format")
        return schema, "response_format"
    raise RequestError("response_format.type must be one of 'text', 'json_object' or 'json_schema'.",
                       "response_format")
