"""OpenAI (fine-tuned ``ft:`` models and any OpenAI-compatible API) through the ``openai`` SDK.

Chat requests go through ``chat.completions.create``; legacy completions (``text_complete``/
``text_stream``: ``ft:davinci-002``/``ft:babbage-002``-style models) through ``completions.create``;
Responses API requests (``responses_create``/``responses_stream``, passed through) through
``responses.create``. Only the fields the SDK's method accepts are sent: vLLM's extra sampling fields (``top_k``...)
would be rejected by OpenAI, so they are dropped here and nowhere else. The SDK's own retries
are off: the router decides about retries. The caller's tenant is not sent to OpenAI; it only
tells the breaker who met a fault.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from gateway.config import TargetConfig
from gateway.errors import (
    GatewayError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import Reply
from gateway.providers.errors import from_status
from gateway.providers.replicas import Replicas
from gateway.providers.sse import CHUNKS, EVENTS, RAW_CHUNKS, Framing
from gateway.sse import SSEParser

if TYPE_CHECKING:
    import openai

# The SDK (about 0.6 s to import) is imported when a target of this kind is made: a gateway, a CLI or the
# log writer that routes to none (the embedded default) never loads it.
log = logging.getLogger(__name__)

NOT_FIELDS = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}


@cache
def accepted(api: str) -> frozenset[str]:
    """The fields the SDK's ``create`` takes for ``api`` (``chat``, ``text``, ``responses``)."""
    from openai.resources.chat.completions import AsyncCompletions
    from openai.resources.completions import AsyncCompletions as AsyncTextCompletions
    from openai.resources.responses import AsyncResponses

    create: Callable[..., Any] = (AsyncCompletions.create if api == "chat" else AsyncTextCompletions.create
                                  if api == "text" else AsyncResponses.create)
    return frozenset(inspect.signature(create).parameters) - NOT_FIELDS


def load_sdk() -> None:
    """Import the SDK and read the signatures a provider of this kind needs (once per process). A config
    reload that brings the first ``openai`` target calls it in a thread first, so the event loop does not
    stop for the import (about half a second)."""
    for api in ("chat", "text", "responses"):
        accepted(api)


class OpenAIProvider:
    kind = "openai"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.base_url = cfg.base_urls[0]
        self.replicas = Replicas(name, cfg)
        self._client: openai.AsyncOpenAI | None = None
        load_sdk()  # here, at start (or before a reload, in a thread), not under a first request

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            key = os.environ.get(self.cfg.api_key_env or "OPENAI_API_KEY")
            if not key:
                raise UpstreamUnavailable(
                    f"target {self.name!r} has no API key: set ${self.cfg.api_key_env or 'OPENAI_API_KEY'}")
            import openai  # loaded already (``accepted``, at __init__)

            # openai 3 annotates httpx2 types but takes httpx's too (openai/_httpx2.py: "legacy" clients)
            self._client = openai.AsyncOpenAI(
                api_key=key, base_url=self.base_url, max_retries=0,
                timeout=httpx.Timeout(self.cfg.timeout_s, connect=self.cfg.connect_timeout_s),
                http_client=httpx.AsyncClient(limits=httpx.Limits(
                    max_connections=self.cfg.max_connections, max_keepalive_connections=64)),
            )
        return self._client

    def _kwargs(self, body: dict[str, Any], api: str = "chat") -> dict[str, Any]:
        fields = accepted(api)
        dropped = body.keys() - fields
        if dropped:
            log.debug("target %s: dropping fields OpenAI does not take: %s", self.name, sorted(dropped))
            return {k: v for k, v in body.items() if k in fields}
        return body

    def _resource(self, api: str) -> Any:
        """The SDK's ``chat.completions``, ``completions`` (legacy) or ``responses``."""
        if api == "chat":
            return self.client.chat.completions
        return self.client.completions if api == "text" else self.client.responses

    def _fail(self, exc: BaseException) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        import openai  # loaded already (``accepted``, at __init__)

        if isinstance(exc, openai.APIStatusError):
            return from_status(exc.status_code, exc.response.content, dict(exc.response.headers),
                               f"target {self.name!r}")
        if isinstance(exc, openai.APITimeoutError):
            return UpstreamTimeout(f"target {self.name!r} timed out")
        if isinstance(exc, openai.APIConnectionError):
            return UpstreamUnavailable(f"target {self.name!r} is unreachable")
        return UpstreamError(f"target {self.name!r} failed: {type(exc).__name__}")

    def _failed(self, exc: BaseException, tenant: str | None = None) -> GatewayError:
        """Translate, and tell the breaker (gateway.resilience says what counts)."""
        err = self._fail(exc)
        self.replicas.record(self.base_url, err, tenant)
        return err

    async def complete(self, body: dict[str, Any], lora_path: str | None = None,
                       tenant: str | None = None, api: str = "chat") -> Reply:
        self.replicas.pick()
        try:
            kwargs = self._kwargs(body, api)
            raw = await self._resource(api).with_raw_response.create(**kwargs)
            reply = Reply(orjson.loads(raw.content), self.base_url)
        except Exception as exc:
            raise self._failed(exc, tenant) from exc
        except BaseException:  # cancelled (the client went away): no verdict on the replica
            self.replicas.released(self.base_url)
            raise
        self.replicas.succeeded(self.base_url)
        return reply

    async def stream(self, body: dict[str, Any], lora_path: str | None = None,
                     tenant: str | None = None, api: str = "chat", raw: bool = False) -> _SDKStream:
        self.replicas.pick()
        try:
            kwargs = self._kwargs(body, api)
            cm = self._resource(api).with_streaming_response.create(**kwargs)
            resp = await cm.__aenter__()
        except Exception as exc:
            raise self._failed(exc, tenant) from exc
        except BaseException:
            self.replicas.released(self.base_url)
            raise
        return _SDKStream(self, cm, resp, tenant,
                          EVENTS if api == "responses" else RAW_CHUNKS if raw else CHUNKS)

    async def text_complete(self, body: dict[str, Any], lora_path: str | None = None,
                            tenant: str | None = None) -> Reply:
        return await self.complete(body, lora_path, tenant, api="text")

    async def text_stream(self, body: dict[str, Any], lora_path: str | None = None,
                          tenant: str | None = None, raw: bool = False) -> _SDKStream:
        return await self.stream(body, lora_path, tenant, api="text", raw=raw)

    async def responses_create(self, body: dict[str, Any], lora_path: str | None = None,
                               tenant: str | None = None) -> Reply:
        return await self.complete(body, lora_path, tenant, api="responses")

    async def responses_stream(self, body: dict[str, Any], lora_path: str | None = None,
                               tenant: str | None = None) -> _SDKStream:
        return await self.stream(body, lora_path, tenant, api="responses")

    async def list_models(self) -> list[dict[str, Any]]:
        return []  # the config names the OpenAI models clients may call

    async def ready(self) -> bool:
        return bool(os.environ.get(self.cfg.api_key_env or "OPENAI_API_KEY"))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


class _SDKStream:
    def __init__(self, provider: OpenAIProvider, cm: Any, resp: Any, tenant: str | None = None,
                 framing: Framing = CHUNKS) -> None:
        self.provider = provider
        self.framing = framing
        self.tenant = tenant
        self.cm = cm
        self.resp = resp
        self.base_url = provider.base_url
        self.done = False
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Parsed chunks, in batches: the events of one read of the SDK's byte stream."""
        parser = SSEParser()
        try:
            async for piece in self.resp.iter_bytes():
                batch, fault, self.done = self.framing.read(self.provider.name, parser, piece)
                if self.done:
                    self.provider.replicas.succeeded(self.base_url)
                if batch:
                    yield batch
                if fault is not None:
                    raise fault
                if self.done:
                    return
            raise UpstreamError(f"target {self.provider.name!r} failed: the stream ended without {self.framing.end}")
        except GatewayError as exc:
            self.provider.replicas.record(self.base_url, exc, self.tenant)
            raise
        except Exception as exc:
            raise self.provider._failed(exc, self.tenant) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.provider.replicas.released(self.base_url)
            await self.cm.__aexit__(None, None, None)
