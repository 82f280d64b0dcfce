"""A vLLM target's SSE stream: parsed ``chat.completion.chunk`` batches for the relay.

Split from vllm.py. Events are framed by the project's one SSE parser (``gateway.sse``) and
decoded by a ``Framing``, which the OpenAI provider's stream shares: ``CHUNKS`` (chat and legacy
completions: ``data:`` chunks until ``[DONE]``, an error envelope in place of a chunk is a
fault) or ``EVENTS`` (the Responses API: typed events until ``response.completed``,
``.incomplete`` or ``.failed``; an ``error`` event is a fault). Faults are told to the
replica's breaker as gateway.resilience says: an error event mid-stream and a stream that
outlives ``timeout_s`` while answering are ``request_suspect``; a broken connection is the
replica's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, clip
from gateway.providers.http1 import Exchange, ProtocolError
from gateway.sse import SSEParser

if TYPE_CHECKING:
    from gateway.providers.vllm import VLLMProvider


Batch = list[dict[str, Any]]


def _fault(target: str, err: Any) -> UpstreamError:
    msg = err.get("message") if isinstance(err, dict) else str(err)
    fault = UpstreamError(f"target {target!r} failed mid-stream: {clip(msg, 1024)}")
    fault.request_suspect = True  # the replica answered: maybe this request's fault
    return fault


def decode(target: str, events: list[bytes]) -> tuple[Batch, UpstreamError | None]:
    """The chunks of a read's events, up to an error event (OpenAI's envelope in place of a
    chunk), which comes back as the error to raise once the chunks before it are relayed."""
    batch: Batch = []
    for data in events:
        chunk = orjson.loads(data)
        if "error" in chunk and "choices" not in chunk:
            return batch, _fault(target, chunk["error"])
        batch.append(chunk)
    return batch, None


def _read_chunks(target: str, parser: SSEParser, piece: bytes) -> tuple[Batch, UpstreamError | None, bool]:
    batch, fault = decode(target, parser.feed(piece))
    return batch, fault, parser.done and fault is None


def _read_raw(target: str, parser: SSEParser, piece: bytes) -> tuple[list[Any], UpstreamError | None, bool]:
    """The chunks' data as bytes, unparsed (the byte relay, ``gateway.raw_chunks``). Only an event
    that names an ``"error"`` key is parsed, to tell OpenAI's error envelope from a chunk: a key in
    JSON is a quoted name, and a quote inside a string value is escaped, so a chunk whose text merely
    mentions "error" does not match. An event that is not a JSON object is a fault like an error."""
    batch: list[Any] = []
    for data in parser.feed(piece):
        if data[:1] != b"{" or data[-1:] != b"}":
            return batch, _fault(target, "an event that is not a JSON object"), False
        if b'"error"' in data:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                return batch, _fault(target, "an event that is not JSON"), False
            if "error" in chunk and "choices" not in chunk:
                return batch, _fault(target, chunk["error"]), False
        batch.append(data)
    return batch, None, parser.done


TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _read_events(target: str, parser: SSEParser, piece: bytes) -> tuple[Batch, UpstreamError | None, bool]:
    """Responses API events up to the terminal one (anything after it is dropped); an ``error``
    event is the fault, raised once the events before it are relayed."""
    batch: Batch = []
    for data in parser.feed(piece):
        event = orjson.loads(data)
        kind = event.get("type")
        if kind == "error":
            return batch, _fault(target, event), False
        batch.append(event)
        if kind in TERMINAL:
            return batch, None, True
    return batch, None, False


@dataclass(frozen=True, slots=True)
class Framing:
    """How a stream's events are read: ``read(target, parser, piece)`` -> (batch, fault, done)."""

    end: str  # what ends such a stream (named when one ends without it)
    read: Callable[[str, SSEParser, bytes], tuple[list[Any], UpstreamError | None, bool]]


CHUNKS = Framing("[DONE]", _read_chunks)
RAW_CHUNKS = Framing("[DONE]", _read_raw)  # CHUNKS as bytes, for the byte relay
EVENTS = Framing("a final response event", _read_events)


class SSEStream:
    """Parsed chunks of an upstream SSE stream; ``aclose`` frees the connection at once.

    The target's total timeout bounds the whole stream: a timer fails the exchange.
    """

    def __init__(self, provider: VLLMProvider, ex: Exchange, url: str, tenant: str | None = None,
                 framing: Framing = CHUNKS) -> None:
        self.provider = provider
        self.framing = framing
        self.ex = ex
        self.base_url = url
        self.tenant = tenant
        self._closed = False
        self.done = False
        self._timer = asyncio.get_running_loop().call_later(provider.cfg.timeout_s, self._expire)

    def _expire(self) -> None:
        self.ex.error = TimeoutError()
        self.ex._wake()

    async def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Parsed chunks, in batches: every event that arrived in one network read at once,
        so the relay writes them to the client in one go (nothing is held back)."""
        parser = SSEParser()
        try:
            async for piece in self.ex.iter_body():
                batch, fault, self.done = self.framing.read(self.provider.name, parser, piece)
                if batch:
                    yield batch
                if fault is not None:
                    raise fault
                if self.done:
                    return
            raise ProtocolError(f"the stream ended without {self.framing.end}")
        except GatewayError as exc:
            self.provider.replicas.record(self.base_url, exc, self.tenant)
            raise
        except TimeoutError as exc:  # the whole stream ran past timeout_s: the replica was answering
            err = UpstreamTimeout(f"target {self.provider.name!r}: the stream ran past its timeout")
            err.request_suspect = True
            self.provider.replicas.record(self.base_url, err, self.tenant)
            raise err from exc
        except Exception as exc:
            raise self.provider._failed(exc, self.base_url, self.tenant) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._timer.cancel()
            if self.done:
                self.provider.replicas.succeeded(self.base_url)
                await self._drain()
            else:
                self.ex.close()  # a cut stream: drop the connection (the engine aborts the request)
                self.provider.replicas.released(self.base_url)
            self.provider.replicas.in_flight[self.base_url] -= 1

    async def _drain(self) -> None:
        """After [DONE] only the chunked terminator is left: read it so the connection is reused."""
        try:
            async with asyncio.timeout(1):
                async for _ in self.ex.iter_body():
                    pass
        except (OSError, TimeoutError):
            self.ex.close()
