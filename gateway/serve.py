"""``tuneloop serve``: the gateway under uvicorn, plus the embedded engine as a child process.

The engine runs in its own process so inference never competes with the gateway's event
loop; it is started for every target marked ``embedded`` and stopped when the gateway exits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from urllib.parse import urlparse

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.settings import Settings

log = logging.getLogger("tuneloop.serve")


def start_engines(settings: Settings, config: GatewayConfig) -> list[subprocess.Popen]:
    children = []
    for name, target in config.targets.items():
        if not target.embedded:
            continue
        url = urlparse(target.base_urls[0])
        cmd = [sys.executable, "-m", "gateway.cli", "engine", "--host", url.hostname or "127.0.0.1",
               "--port", str(url.port or 8001)]
        adapters = settings.resolved_home() / "adapters"
        adapters.mkdir(parents=True, exist_ok=True)
        cmd += ["--adapters", str(adapters)]
        env = {**os.environ, "TUNELOOP_HOME": str(settings.resolved_home()), "HF_HUB_OFFLINE": "1"}
        log.info("starting the embedded engine for target %r on %s", name, target.base_urls[0])
        children.append(subprocess.Popen(cmd, env=env))
    return children


def run(settings: Settings, config: GatewayConfig) -> None:
    children = start_engines(settings, config)
    try:
        uvicorn.run(create_app(settings, config), host=settings.host, port=settings.port,
                    loop="uvloop", http="httptools", access_log=False, lifespan="on",
                    timeout_graceful_shutdown=30, log_level="info")
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
