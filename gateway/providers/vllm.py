"""vLLM's OpenAI-compatible HTTP API (also spoken by `tuneloop engine`).

Chat requests go to ``/chat/completions``, legacy completions (``text_complete``/``text_stream``)
to ``/completions``, Responses API requests (``responses_create``/``responses_stream``, for a
target with ``responses_api: true``: vLLM >= 0.10) to ``/responses``, on the same replicas,
adapters and breakers.
Each replica (base URL) has a keep-alive connection pool (``http1.Pool``); replicas are
balanced by least in-flight requests behind circuit breakers. Bodies are forwarded as
JSON untouched (vLLM's extra sampling fields included), with the caller's project in
``x-tuneloop-tenant`` (the engine queues fairly across tenants). A body that cannot be
encoded is the caller's 400, before any replica is chosen; error messages name the target,
never a replica's URL.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from gateway.config import TargetConfig, bearer
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import Reply
from gateway.providers.errors import from_status
from gateway.providers.http1 import ConnectError, Exchange, Pool, ProtocolError
from gateway.providers.replicas import Replicas
from gateway.providers.sse import CHUNKS, EVENTS, RAW_CHUNKS, Framing, SSEStream

JSON_HEADERS = b"content-type: application/json\r\n"
CHAT, TEXT, RESPONSES = b"/chat/completions", b"/completions", b"/responses"


class Headers:
    """A target's request headers, encoded once: JSON, its API key (vLLM's ``--api-key``, from the
    target's ``api_key_env``), plus ``x-tuneloop-tenant`` (quoted unless printable ASCII)."""

    def __init__(self, cfg: TargetConfig) -> None:
        self.base = JSON_HEADERS + b"".join(b"%s: %s\r\n" % (k.lower().encode(), v.encode())
                                            for k, v in bearer(cfg.api_key_env).items())
        self._tenants: dict[str, bytes] = {}

    def of(self, tenant: str | None) -> bytes:
        if tenant is None:
            return self.base
        headers = self._tenants.get(tenant)
        if headers is None:
            value = tenant if tenant.isascii() and tenant.isprintable() else quote(tenant, safe="")
            headers = self.base + b"x-tuneloop-tenant: " + value.encode() + b"\r\n"
            if len(self._tenants) >= 4096:
                self._tenants.clear()
            self._tenants[tenant] = headers
        return headers


def encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:  # validation keeps this from happening: still the caller's
        raise InvalidRequest(f"The request body cannot be forwarded: {exc}.") from exc


class _Replica:
    """A base URL split into its connection pool and path prefix."""

    __slots__ = ("pool", "prefix", "root")

    def __init__(self, url: str, cfg: TargetConfig) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"vllm targets speak plain http on a private network, not {url!r}")
        self.pool = Pool(parts.hostname or "127.0.0.1", parts.port or 80,
                         limit=cfg.max_connections, connect_timeout=cfg.connect_timeout_s)
        self.prefix = parts.path.rstrip("/").encode()  # b"/v1"
        self.root = parts.path.rstrip("/").removesuffix("/v1").encode()


class VLLMProvider:
    kind = "vllm"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.replicas = Replicas(name, cfg)
        self._loading: dict[str, asyncio.Lock] = {}
        self._http: dict[str, _Replica] = {u: _Replica(u, cfg) for u in cfg.base_urls}
        self.headers = Headers(cfg)

    async def _request(self, url: str, method: bytes, path: bytes, body: bytes = b"",
                       timeout: float | None = None, headers: bytes | None = None) -> tuple[Exchange, bytes]:
        """A whole request/response on ``url``'s pool (path relative to the base URL).

        The timeout is one timer that cancels this task (cheaper than ``asyncio.timeout``'s
        context on every request) and is turned into ``TimeoutError`` here."""
        rep = self._http[url]
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(timeout or self.cfg.timeout_s, expire)
        try:
            ex = await rep.pool.request(method, rep.prefix + path, body, headers or self.headers.base)
            return ex, await ex.read()
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            timer.cancel()

    def _fail(self, exc: BaseException) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"target {self.name!r} timed out")
        if isinstance(exc, ConnectError):
            return UpstreamUnavailable(f"target {self.name!r} is unreachable")
        if isinstance(exc, ProtocolError):
            return UpstreamError(f"target {self.name!r} failed: the connection broke")
        return UpstreamError(f"target {self.name!r} failed: {type(exc).__name__}")

    async def complete(self, body: dict[str, Any], lora_path: str | None = None,
                       tenant: str | None = None) -> Reply:
        return await self._on_replicas(body, lora_path, tenant, self._complete_on)

    async def stream(self, body: dict[str, Any], lora_path: str | None = None,
                     tenant: str | None = None, raw: bool = False) -> SSEStream:
        return await self._on_replicas(body, lora_path, tenant,
                                       partial(self._stream_on, framing=RAW_CHUNKS if raw else CHUNKS))

    async def text_complete(self, body: dict[str, Any], lora_path: str | None = None,
                            tenant: str | None = None) -> Reply:
        return await self._on_replicas(body, lora_path, tenant, partial(self._complete_on, path=TEXT))

    async def text_stream(self, body: dict[str, Any], lora_path: str | None = None,
                          tenant: str | None = None, raw: bool = False) -> SSEStream:
        return await self._on_replicas(body, lora_path, tenant,
                                       partial(self._stream_on, path=TEXT, framing=RAW_CHUNKS if raw else CHUNKS))

    async def responses_create(self, body: dict[str, Any], lora_path: str | None = None,
                               tenant: str | None = None) -> Reply:
        return await self._on_replicas(body, lora_path, tenant, partial(self._complete_on, path=RESPONSES))

    async def responses_stream(self, body: dict[str, Any], lora_path: str | None = None,
                               tenant: str | None = None) -> SSEStream:
        return await self._on_replicas(body, lora_path, tenant,
                                       partial(self._stream_on, path=RESPONSES, framing=EVENTS))

    async def _on_replicas(self, body: dict[str, Any], lora_path: str | None, tenant: str | None,
                           op: Any) -> Any:
        """Run ``op`` on a chosen replica; a refused connection moves on to the next one at
        once (the request never reached a server, so this is always safe)."""
        data, headers = encode(body), self.headers.of(tenant)
        tried: tuple[str, ...] = ()
        while True:
            url = await self._choose(body["model"], lora_path, tried)
            try:
                return await op(url, data, headers, tenant)
            except UpstreamUnavailable as exc:
                tried += (url,)
                if not isinstance(exc.__cause__, ConnectError) or len(tried) >= len(self.replicas.urls):
                    raise

    async def _complete_on(self, url: str, data: bytes, headers: bytes, tenant: str | None,
                           path: bytes = CHAT) -> Reply:
        self.replicas.in_flight[url] += 1
        try:
            ex, raw = await self._request(url, b"POST", path, data, headers=headers)
            if ex.status != 200:
                raise from_status(ex.status, raw, dict(ex.headers), f"target {self.name!r}")
            try:
                reply = Reply(orjson.loads(raw), url)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError(f"target {self.name!r} returned invalid JSON") from exc
            self.replicas.succeeded(url)
            return reply
        except Exception as exc:
            raise self._failed(exc, url, tenant) from exc
        except BaseException:  # cancelled (the client went away): no verdict on the replica
            self.replicas.released(url)
            raise
        finally:
            self.replicas.in_flight[url] -= 1

    async def _stream_on(self, url: str, data: bytes, headers: bytes, tenant: str | None,
                         path: bytes = CHAT, framing: Framing = CHUNKS) -> SSEStream:
        rep = self._http[url]
        self.replicas.in_flight[url] += 1
        try:
            ex = await rep.pool.request(b"POST", rep.prefix + path, data, headers)
            if ex.status != 200:
                raw = await ex.read()
                raise from_status(ex.status, raw, dict(ex.headers), f"target {self.name!r}")
        except BaseException as exc:  # cancelled by a TTFT timeout too: give the slot back
            self.replicas.in_flight[url] -= 1
            if not isinstance(exc, Exception):
                self.replicas.released(url)
                raise
            raise self._failed(exc, url, tenant) from exc
        return SSEStream(self, ex, url, tenant, framing)

    def _failed(self, exc: BaseException, url: str, tenant: str | None = None) -> GatewayError:
        """Translate, and tell the replica's breaker (gateway.resilience says what counts)."""
        err = self._fail(exc)
        self.replicas.record(url, err, tenant)
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
            return url, {c["id"] for c in await self._models_of(url)}
        return dict(await asyncio.gather(*(one(u) for u in self.replicas.urls)))

    async def _models_of(self, url: str) -> list[dict[str, Any]]:
        try:
            ex, raw = await self._request(url, b"GET", b"/models", timeout=2)
            return orjson.loads(raw).get("data", []) if ex.status == 200 else []
        except (OSError, TimeoutError, orjson.JSONDecodeError):
            return []

    async def _load_adapter(self, url: str, name: str, path: str) -> None:
        """vLLM's runtime LoRA API; one load per (replica, adapter) at a time."""
        lock = self._loading.setdefault(f"{url} {name}", asyncio.Lock())
        async with lock:
            if name in self.replicas.holdings.get(url, ()):
                return
            body = orjson.dumps({"lora_name": name, "lora_path": path})
            try:
                ex, raw = await self._request(url, b"POST", b"/load_lora_adapter", body)
            except Exception as exc:
                raise self._failed(exc, url) from exc
            if ex.status != 200 and b"already" not in raw.lower():
                err = from_status(ex.status, raw, None, f"target {self.name!r} loading {name!r}")
                err.message = err.message.replace(path, f"<{name}>")  # the adapter's path is ours
                raise err
            self.replicas.holdings.setdefault(url, set()).add(name)

    async def list_models(self) -> list[dict[str, Any]]:
        """The union of the replicas' /v1/models (unreachable replicas are skipped)."""
        seen: dict[str, dict[str, Any]] = {}
        for cards in await asyncio.gather(*(self._models_of(u) for u in self.replicas.urls)):
            for card in cards:
                seen.setdefault(card["id"], card)
        return list(seen.values())

    async def ready(self) -> bool:
        for rep in self._http.values():
            try:
                async with asyncio.timeout(2):
                    ex = await rep.pool.request(b"GET", rep.root + b"/health")
                    await ex.read()
                if ex.status == 200:
                    return True
            except (OSError, TimeoutError):
                continue
        return False

    async def aclose(self) -> None:
        for rep in self._http.values():
            rep.pool.close()
