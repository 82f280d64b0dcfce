"""vLLM's OpenAI-compatible HTTP API (also spoken by `tuneloop engine`).

One pooled keep-alive aiohttp session per target; several base URLs are balanced by
least in-flight requests. Bodies are forwarded as JSON untouched (vLLM's extra sampling
fields included).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.config import TargetConfig
from gateway.errors import (
    GatewayError,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import Reply
from gateway.providers.errors import from_status
from gateway.providers.replicas import Replicas

_JSON = {"content-type": "application/json"}


class VLLMProvider:
    kind = "vllm"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.replicas = Replicas(name, cfg)
        self._loading: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout_s, sock_connect=cfg.connect_timeout_s)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.cfg.max_connections, keepalive_timeout=60,
                                             ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _fail(self, exc: BaseException, url: str) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, asyncio.TimeoutError):
            return UpstreamTimeout(f"target {self.name!r} ({url}) timed out")
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionError):
            return UpstreamUnavailable(f"target {self.name!r} ({url}) is unreachable")
        return UpstreamError(f"target {self.name!r} ({url}) failed: {type(exc).__name__}")

    async def complete(self, body: dict[str, Any], lora_path: str | None = None) -> Reply:
        return await self._on_replicas(body, lora_path, self._complete_on)

    async def stream(self, body: dict[str, Any], lora_path: str | None = None) -> _SSEStream:
        return await self._on_replicas(body, lora_path, self._stream_on)

    async def _on_replicas(self, body: dict[str, Any], lora_path: str | None, op: Any) -> Any:
        """Run ``op`` on a chosen replica; a refused connection moves on to the next one at
        once (the request never reached a server, so this is always safe)."""
        tried: tuple[str, ...] = ()
        while True:
            url = await self._choose(body["model"], lora_path, tried)
            try:
                return await op(url, body)
            except UpstreamUnavailable as exc:
                tried += (url,)
                if not isinstance(exc.__cause__, aiohttp.ClientConnectorError) or \
                        len(tried) >= len(self.replicas.urls):
                    raise

    async def _complete_on(self, url: str, body: dict[str, Any]) -> Reply:
        self.replicas.in_flight[url] += 1
        try:
            async with self.session.post(f"{url}/chat/completions", data=orjson.dumps(body),
                                         headers=_JSON) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise from_status(resp.status, raw, dict(resp.headers), f"target {self.name!r}")
                try:
                    reply = Reply(orjson.loads(raw), url)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamError(f"target {self.name!r} returned invalid JSON") from exc
            self.replicas.succeeded(url)
            return reply
        except Exception as exc:
            raise self._failed(exc, url) from exc
        finally:
            self.replicas.in_flight[url] -= 1

    async def _stream_on(self, url: str, body: dict[str, Any]) -> _SSEStream:
        self.replicas.in_flight[url] += 1
        try:
            resp = await self.session.post(f"{url}/chat/completions", data=orjson.dumps(body),
                                           headers=_JSON)
            if resp.status != 200:
                raw = await resp.read()
                resp.release()
                raise from_status(resp.status, raw, dict(resp.headers), f"target {self.name!r}")
        except BaseException as exc:  # cancelled by a TTFT timeout too: give the slot back
            self.replicas.in_flight[url] -= 1
            if not isinstance(exc, Exception):
                raise
            raise self._failed(exc, url) from exc
        return _SSEStream(self, resp, url)

    def _failed(self, exc: BaseException, url: str) -> GatewayError:
        """Translate, and count it against the replica's breaker unless it was the caller's fault."""
        err = self._fail(exc, url)
        if not isinstance(err, UpstreamClientError) or err.status_code == 429:
            self.replicas.failed(url)
        else:
            self.replicas.succeeded(url)
        return err

    async def _choose(self, model: str, lora_path: str | None, tried: tuple[str, ...] = ()) -> str:
        """Adapter-aware choice: a replica that holds ``model``, else load it on one."""
        reps = self.replicas
        if not self.cfg.adapter_aware or (len(reps.urls) == 1 and lora_path is None):
            return reps.pick(exclude=tried)
        if reps.holdings_stale():
            reps.set_holdings(await self._holdings())
        if reps.holder(model) or lora_path is None:
            return reps.pick(prefer=model, exclude=tried)
        url = reps.pick(exclude=tried)
        await self._load_adapter(url, model, lora_path)
        return url

    async def _holdings(self) -> dict[str, set[str]]:
        async def one(url: str) -> tuple[str, set[str]]:
            try:
                async with self.session.get(f"{url}/models", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    data = orjson.loads(await r.read()) if r.status == 200 else {}
                return url, {c["id"] for c in data.get("data", [])}
            except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
                return url, set()
        return dict(await asyncio.gather(*(one(u) for u in self.replicas.urls)))

    async def _load_adapter(self, url: str, name: str, path: str) -> None:
        """vLLM's runtime LoRA API; one load per (replica, adapter) at a time."""
        lock = self._loading.setdefault(f"{url} {name}", asyncio.Lock())
        async with lock:
            if name in self.replicas.holdings.get(url, ()):
                return
            try:
                async with self.session.post(f"{url.removesuffix('/v1')}/v1/load_lora_adapter",
                                             data=orjson.dumps({"lora_name": name, "lora_path": path}),
                                             headers=_JSON) as r:
                    text = await r.text()
            except Exception as exc:
                raise self._failed(exc, url) from exc
            if r.status != 200 and "already" not in text.lower():
                raise from_status(r.status, text.encode(), None, f"target {self.name!r} loading {name!r}")
            self.replicas.holdings.setdefault(url, set()).add(name)

    async def list_models(self) -> list[dict[str, Any]]:
        """The union of the replicas' /v1/models (unreachable replicas are skipped)."""
        seen: dict[str, dict[str, Any]] = {}
        for url in self.replicas.urls:
            try:
                async with self.session.get(f"{url}/models", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        for card in orjson.loads(await r.read()).get("data", []):
                            seen.setdefault(card["id"], card)
            except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
                continue
        return list(seen.values())

    async def ready(self) -> bool:
        for url in self.replicas.urls:
            health = url.removesuffix("/v1") + "/health"
            try:
                async with self.session.get(health, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
        return False

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _SSEStream:
    """Parsed chunks of an upstream SSE stream; ``aclose`` frees the connection at once."""

    def __init__(self, provider: VLLMProvider, resp: aiohttp.ClientResponse, url: str) -> None:
        self.provider = provider
        self.resp = resp
        self.base_url = url
        self._closed = False
        self._done = False

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for line in self.resp.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    self._done = True
                    return
                chunk = orjson.loads(data)
                if "error" in chunk and "choices" not in chunk:
                    err = chunk["error"]
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise UpstreamError(f"target {self.provider.name!r} failed mid-stream: {msg}")
                yield chunk
        except GatewayError:
            self.provider.replicas.failed(self.base_url)
            raise
        except Exception as exc:
            raise self.provider._failed(exc, self.base_url) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._done:
                self.provider.replicas.succeeded(self.base_url)
            self.provider.replicas.in_flight[self.base_url] -= 1
            # a finished stream gives its connection back to the pool; a cut one drops it
            if self._done:
                self.resp.release()
            else:
                self.resp.close()
