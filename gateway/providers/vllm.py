"""vLLM's OpenAI-compatible HTTP API (also spoken by `tuneloop engine`).

One pooled keep-alive aiohttp session per target; several base URLs are balanced by
least in-flight requests. Bodies are forwarded as JSON untouched (vLLM's extra sampling
fields included).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.config import TargetConfig
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.providers.base import Reply
from gateway.providers.errors import from_status

_JSON = {"content-type": "application/json"}


class Replicas:
    """Least-in-flight choice over a target's base URLs (ties rotate)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.in_flight = dict.fromkeys(urls, 0)
        self._rotation = itertools.cycle(range(len(urls)))

    def pick(self) -> str:
        if len(self.urls) == 1:
            return self.urls[0]
        start = next(self._rotation)
        order = self.urls[start:] + self.urls[:start]
        return min(order, key=self.in_flight.__getitem__)


class VLLMProvider:
    kind = "vllm"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.replicas = Replicas(cfg.base_urls)
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

    async def complete(self, body: dict[str, Any]) -> Reply:
        url = self.replicas.pick()
        self.replicas.in_flight[url] += 1
        try:
            async with self.session.post(f"{url}/chat/completions", data=orjson.dumps(body),
                                         headers=_JSON) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise from_status(resp.status, raw, dict(resp.headers), f"target {self.name!r}")
                try:
                    return Reply(orjson.loads(raw), url)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamError(f"target {self.name!r} returned invalid JSON") from exc
        except Exception as exc:
            raise self._fail(exc, url) from exc
        finally:
            self.replicas.in_flight[url] -= 1

    async def stream(self, body: dict[str, Any]) -> _SSEStream:
        url = self.replicas.pick()
        self.replicas.in_flight[url] += 1
        try:
            resp = await self.session.post(f"{url}/chat/completions", data=orjson.dumps(body),
                                           headers=_JSON)
            if resp.status != 200:
                raw = await resp.read()
                resp.release()
                raise from_status(resp.status, raw, dict(resp.headers), f"target {self.name!r}")
        except Exception as exc:
            self.replicas.in_flight[url] -= 1
            raise self._fail(exc, url) from exc
        return _SSEStream(self, resp, url)

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
            raise
        except Exception as exc:
            raise self.provider._fail(exc, self.base_url) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.provider.replicas.in_flight[self.base_url] -= 1
            # a finished stream gives its connection back to the pool; a cut one drops it
            if self._done:
                self.resp.release()
            else:
                self.resp.close()
