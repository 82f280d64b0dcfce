"""Who may talk to the engine, which adapter folders it reads, and how it lives and dies with ``tuneloop serve``.

- **API key** (vLLM's ``--api-key``, or ``$VLLM_API_KEY``): every route needs
  ``Authorization: Bearer <key>``, else a 401 in OpenAI's envelope, except the public ones of vLLM's
  ``middleware/authenticate.py`` (``PUBLIC_ENDPOINTS``): ``/health``, ``/ping``, ``/load``, ``/version``,
  ``/metrics`` and the API docs.  So ``/tokenize``, ``/detokenize`` and ``/invocations`` need the key too
  (vLLM before that module guarded only paths starting with ``/v1``, which left them open); a CORS
  preflight (``OPTIONS``) passes, as there.  ``tuneloop serve`` starts its engine with a fresh random
  key per start.
- **Adapter roots**: ``POST /v1/load_lora_adapter`` reads only folders under the allowed roots (the
  engine's ``--adapters`` folder, ``$TUNELOOP_HOME/adapters`` and each ``--allowed-lora-roots``), after
  resolving symlinks; any other path is a 400 naming ``lora_path``.
- **An inherited socket** (``--fd``): ``tuneloop serve`` binds the engine's port itself, so a port held
  by another process fails the gateway's start instead of sending requests to an impostor, and a
  restarted engine serves the same socket.
- **Parent watch** (``--parent-pid``): the engine stops when the process that started it is gone
  (a ``kill -9`` of ``tuneloop serve``), instead of lingering for the next ``serve`` to adopt.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

PUBLIC_PATHS = ("/health", "/ping", "/load", "/version", "/metrics", "/docs", "/redoc", "/openapi.json", "/static")
_UNAUTHORIZED = orjson.dumps({"error": {"message": "Unauthorized: a valid API key (Authorization: Bearer ...) "
                                        "is required.", "type": "invalid_request_error", "param": None,
                                        "code": "invalid_api_key"}})


class ApiKeyMiddleware:
    """A pure ASGI check (no per-request task or body wrapping) of the bearer key on non-public paths."""

    def __init__(self, app: ASGI, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or public(scope["path"]) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.expected)
        return False


def public(path: str) -> bool:
    """A path anyone may reach: one of :data:`PUBLIC_PATHS` or below it (``/healthz`` is not ``/health``)."""
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


class LoraRoots:
    """The folders runtime adapter loads may read from."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = sorted({Path(r).expanduser().resolve() for r in roots})

    def check(self, path: str) -> Path:
        """The resolved path, or ``ValueError`` when it lies outside every root."""
        resolved = Path(path).expanduser().resolve()
        if any(resolved.is_relative_to(root) for root in self.roots):
            return resolved
        raise ValueError(f"lora_path {path!r} is outside the folders this engine loads adapters from; start it "
                         "with --allowed-lora-roots DIR to allow another folder.")


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket ``tuneloop serve`` bound and passed down (family detected from the fd)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def watch_parent(parent_pid: int, stop: Callable[[], None], interval_s: float = 0.5) -> threading.Thread:
    """Call ``stop`` once ``parent_pid`` is no longer our parent (it died; we were re-parented)."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        log.warning("the process that started this engine (pid %d) is gone: stopping", parent_pid)
        stop()

    thread = threading.Thread(target=watch, name="engine-parent-watch", daemon=True)
    thread.start()
    return thread
