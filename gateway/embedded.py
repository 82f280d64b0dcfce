"""The gateway's private link to the engines ``tuneloop serve`` starts (targets marked ``embedded``).

``serve`` binds each engine's listening socket itself (port 0 in the target's URL, the default, picks a
free port) and passes it to the child (``adapters/engine/guard.py``): a port another process holds
fails the start with a clear message, and no impostor can answer in the engine's place.  Every start
makes a random API key that the engine requires on all but its public routes (vLLM's ``--api-key``) and
the gateway sends (the target's ``api_key_env``, :data:`KEY_ENV` unless the config names one).

Other commands on the same home (``tuneloop promote`` hot-loading an adapter, ``serve --workers N``'s
workers) find the port and key in ``$TUNELOOP_HOME/run/engines.json``, readable by the owner only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.config import GatewayConfig
from gateway.settings import Settings

log = logging.getLogger("tuneloop.serve")

KEY_ENV = "TUNELOOP_ENGINE_API_KEY"


def runtime_file(settings: Settings) -> Path:
    return settings.resolved_home() / "run" / "engines.json"


def bind(settings: Settings, config: GatewayConfig) -> dict[str, tuple[socket.socket, str]]:
    """``{target: (listening socket, API key)}`` per embedded target; the target's URL and key are set to match."""
    sockets, runtime = {}, {}
    for name, target in config.targets.items():
        if not target.embedded:
            continue
        parts = urlsplit(target.base_urls[0])
        host, port = parts.hostname or "127.0.0.1", parts.port if parts.port is not None else 80
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise SystemExit(f"cannot start the embedded engine for target {name!r} on {host}:{port}: {exc.strerror}"
                             " (another process holds the port? leave the port out to pick a free one)") from exc
        sock.listen(1024)
        sock.set_inheritable(True)
        url = urlunsplit(parts._replace(netloc=f"{host}:{sock.getsockname()[1]}"))
        target.base_urls = [url]
        target.api_key_env = target.api_key_env or KEY_ENV
        key = os.environ.get(target.api_key_env) or secrets.token_urlsafe(32)
        os.environ[target.api_key_env] = key
        sockets[name] = (sock, key)
        runtime[name] = {"base_url": url, "api_key_env": target.api_key_env, "api_key": key, "pid": os.getpid()}
    if runtime:
        _write_private(runtime_file(settings), json.dumps(runtime, indent=1))
    return sockets


def attach(settings: Settings, config: GatewayConfig) -> None:
    """Point the embedded targets of ``config`` at the engines a ``serve`` on this home started."""
    path = runtime_file(settings)
    try:
        runtime = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for name, target in config.targets.items():
        entry = runtime.get(name)
        if target.embedded and isinstance(entry, dict):
            target.base_urls = [entry["base_url"]]
            target.api_key_env = entry["api_key_env"]
            os.environ[entry["api_key_env"]] = entry["api_key"]


def forget(settings: Settings) -> None:
    """The engines are stopped: their runtime file goes."""
    runtime_file(settings).unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
