"""Both providers read an upstream's SSE stream through the one parser (gateway.sse).

A scripted HTTP/1.1 server on loopback sends each stream as raw chunked bytes, cut where
a network might cut it; the providers are the real ones (the OpenAI one through the
``openai`` SDK). Whatever the framing (CRLF line ends, an event split between pieces, a
comment line), the chunks are the same, and a body that ends cleanly before ``[DONE]`` is an
upstream error, never a complete answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import TargetConfig
from gateway.errors import UpstreamError
from gateway.providers.openai import OpenAIProvider
from gateway.providers.vllm import VLLMProvider

KEY_ENV = "TUNELOOP_TEST_SSE_UPSTREAM_KEY"


def _event(text: str | None, crlf: bool) -> bytes:
    choices = [] if text is None else [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    chunk = {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
    end = b"\r\n" if crlf else b"\n"
    return b"data: " + json.dumps(chunk).encode() + end + end


def _pieces(model: str) -> list[bytes]:
    """The body of each scripted stream, as the pieces the server writes one by one."""
    if model == "crlf":  # CRLF everywhere, a comment, and cuts inside a line and between CR and LF
        body = b": keep-alive\r\n\r\n" + _event("Hel", True) + _event("lo", True) + b"data: [DONE]\r\n\r\n"
        cuts = [5, 30, body.index(b"\r\n\r\n", 20) + 1, len(body) - 9, len(body)]
        return [body[a:b] for a, b in itertools.pairwise([0, *cuts])]
    if model == "no-done":  # two chunks, then the body ends cleanly: no [DONE]
        return [_event("Hel", False), _event("lo", False)]
    raise AssertionError(model)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:"))
            body = json.loads(await reader.readexactly(length))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for piece in _pieces(body["model"]):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.01)  # separate reads on the other side, most of the time
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _upstream() -> AsyncIterator[str]:
    """The scripted server, on the test's own loop; 20 s bound the whole exchange."""
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, asyncio.timeout(20):
        yield f"http://127.0.0.1:{port}/v1"


def _provider(kind: str, url: str) -> Any:
    if kind == "vllm":
        return VLLMProvider("up", TargetConfig(kind="vllm", base_urls=[url], timeout_s=5))
    return OpenAIProvider("up", TargetConfig(kind="openai", base_url=url, api_key_env=KEY_ENV, timeout_s=5))


async def _relay(provider: Any, model: str) -> tuple[list[dict[str, Any]], bool]:
    """What the relay gets: every chunk, and whether the stream said it was done."""
    stream = await provider.stream({"model": model, "messages": [{"role": "user", "content": "hi"}],
                                    "stream": True})
    chunks: list[dict[str, Any]] = []
    try:
        async for batch in stream:
            chunks += batch
    finally:
        await stream.aclose()
    return chunks, stream.done


@pytest.mark.parametrize("kind", ["vllm", "openai"])
async def test_framing_does_not_change_the_chunks(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    async with _upstream() as url:
        provider = _provider(kind, url)
        try:
            chunks, done = await _relay(provider, "crlf")
        finally:
            await provider.aclose()
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Hel", "lo"]
    assert done


@pytest.mark.parametrize("kind", ["vllm", "openai"])
async def test_a_stream_without_done_is_an_upstream_error(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    got: list[dict[str, Any]] = []
    async with _upstream() as url:
        provider = _provider(kind, url)
        try:
            stream = await provider.stream({"model": "no-done", "messages": [{"role": "user", "content": "hi"}],
                                            "stream": True})
            with pytest.raises(UpstreamError):
                async for batch in stream:
                    got += batch
            assert not stream.done
        finally:
            await provider.aclose()
    assert [c["choices"][0]["delta"]["content"] for c in got] == ["Hel", "lo"]  # relayed before the error
