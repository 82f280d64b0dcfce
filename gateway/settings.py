"""Process settings from the environment (``TUNELOOP_*``), via pydantic-settings.

Settings say *where* things are (data folder, config file, database, bind address);
the YAML config (``gateway.config``) says *what* is routed where.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


def default_home() -> Path:
    return Path.cwd() / ".tuneloop"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELOOP_", extra="ignore")

    home: Path = Field(default_factory=default_home)  # data folder: SQLite, adapters, spool, caches
    config: Path | None = None  # YAML config; None = the embedded default
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None  # overrides the config's database_url
    engine_port: int = 0  # where `serve` starts the embedded engine (0: a free port, see gateway/embedded.py)
    workers: int = 1  # gateway processes on the port (metrics aggregated across them)
    max_body_bytes: int = 8 * 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024  # /v1/files (OpenAI's limit per file); 413 above
    files_quota_bytes: int = 100 * 1024**3  # /v1/files: what one project may store in all; 413 above
    log_queue_size: int = 100_000
    max_messages: int = 2048
    # auto: required off loopback; on loopback required once any API key exists, else anonymous
    # callers are project "default" without admin. required | off (explicit only: all are admin)
    auth: str = "auto"
    redis_url: str | None = None  # shared rate limits across replicas (overrides the config's)
    redis_failure: Literal["open", "closed"] | None = None  # overrides the config's redis_failure
    drain_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests and streams may finish

    def resolved_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


def database_url(settings: Settings, config: GatewayConfig) -> str:
    """The database every command uses: ``--database-url`` / ``$TUNELOOP_DATABASE_URL`` > the config's
    ``database_url`` > the home's SQLite."""
    from gateway.store.db import default_database_url  # SQLAlchemy: only when a command needs the database

    return settings.database_url or config.database_url or default_database_url(settings.resolved_home())
