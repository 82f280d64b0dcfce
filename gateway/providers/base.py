"""The one small interface every upstream implements.

A provider takes an OpenAI-shaped chat request (``model`` already set to the upstream's
model name) and returns the upstream's reply as parsed JSON, or an async iterator of
parsed stream chunks; ``text_complete``/``text_stream`` do the same for a legacy completions
request (``prompt``: the target's ``/v1/completions``, ``text_completion`` objects back), and
``responses_create``/``responses_stream`` for a Responses API request passed through to a target
that serves it (``/v1/responses``: a Response object back, or its stream's typed events). It
raises only ``gateway.errors`` exceptions, translated from the upstream's status in one
function per provider. ``tenant`` is the caller's project: vLLM
targets receive it as ``x-tuneloop-tenant`` (fair queueing in the engine), and every
provider tells its breaker who met a fault (gateway.resilience).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import TargetConfig


@dataclass(slots=True)
class Reply:
    body: dict[str, Any]
    base_url: str  # the replica that answered


class ChunkStream(Protocol):
    """Parsed ``chat.completion.chunk`` (or ``text_completion``) objects, or Responses API events, in the
    batches they arrived in; opened ``raw``, the chunks' JSON as bytes."""

    base_url: str

    def __aiter__(self) -> AsyncIterator[list[Any]]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    kind: str
    cfg: TargetConfig

    async def complete(self, body: dict[str, Any], lora_path: str | None = None,
                       tenant: str | None = None) -> Reply: ...

    async def stream(self, body: dict[str, Any], lora_path: str | None = None,
                     tenant: str | None = None, raw: bool = False) -> ChunkStream:
        """Open the stream; upstream errors before the first chunk raise here. ``raw``: the chunks'
        JSON as bytes, unparsed (the byte relay: ``gateway.raw_chunks``)."""
        ...

    async def text_complete(self, body: dict[str, Any], lora_path: str | None = None,
                            tenant: str | None = None) -> Reply: ...

    async def text_stream(self, body: dict[str, Any], lora_path: str | None = None,
                          tenant: str | None = None, raw: bool = False) -> ChunkStream:
        """Open a legacy completions stream; upstream errors before the first chunk raise here."""
        ...

    async def responses_create(self, body: dict[str, Any], lora_path: str | None = None,
                               tenant: str | None = None) -> Reply: ...

    async def responses_stream(self, body: dict[str, Any], lora_path: str | None = None,
                               tenant: str | None = None) -> ChunkStream:
        """Open a Responses API stream; upstream errors before the first event raise here."""
        ...

    async def list_models(self) -> list[dict[str, Any]]: ...

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...
