"""The real gateway app (``create_app``) served by uvicorn on loopback, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.log.service import LogService
from gateway.settings import Settings


class LoopbackGateway:
    def __init__(self, app: object, port: int) -> None:
        self.app = app
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    @property
    def log(self) -> LogService:
        return self.app.state.log  # type: ignore[attr-defined]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="x", max_retries=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(database_url: str, home: Path, auth: str = "off") -> Iterator[LoopbackGateway]:
    """The log tests read every project's records: auth off (explicitly), unless ``auth`` says."""
    app = create_app(Settings(home=home, database_url=database_url, auth=auth), GatewayConfig())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    try:
        yield LoopbackGateway(app, port)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
