"""Where the lifecycle commands work: the database, the data folder and the gateway config.

Resolved exactly as ``tuneloop serve`` resolves them (``--config`` / ``TUNELOOP_CONFIG``,
``TUNELOOP_HOME``, ``TUNELOOP_DATABASE_URL``), so a command run beside a gateway sees
the same routes and database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.config import GatewayConfig


@dataclass
class Workspace:
    engine: sa.Engine
    database_url: str
    home: Path
    config: GatewayConfig  # the YAML's (or the embedded default); the database's routes overlay it
    gateway_url: str  # e.g. http://127.0.0.1:8000/v1
    api_key: str = "tuneloop"  # sent to the gateway; loopback gateways need none

    def close(self) -> None:
        self.engine.dispose()


def open_workspace(config: Path | None = None, database_url: str | None = None, home: Path | None = None,
                   gateway_url: str | None = None, api_key: str | None = None,
                   engine_port: int | None = None) -> Workspace:
    import os

    from gateway.cli import resolve
    from gateway.store import db

    overrides: dict[str, Any] = {"home": home, "engine_port": engine_port}
    settings, cfg, url = resolve(config, database_url, **overrides)
    engine = db.create_engine(url)
    db.upgrade(engine)
    gw = gateway_url or os.environ.get("TUNELOOP_GATEWAY_URL") or f"http://127.0.0.1:{settings.port}/v1"
    key = api_key or os.environ.get("TUNELOOP_API_KEY") or "tuneloop"
    return Workspace(engine, url, settings.resolved_home().resolve(), cfg, gw.rstrip("/"), key)
