"""The YAML config: targets (where models run) and models (the names clients call).

Shape (see ARCHITECTURE.md)::

    database_url: sqlite:///tuneloop.db
    targets:
      local: {kind: vllm, base_urls: [http://127.0.0.1:8001/v1], timeout_s: 60}
      openai: {kind: openai, api_key_env: OPENAI_API_KEY}
    models:
      support-bot:
        routes: [{target: local, model: support-v3, weight: 90}, ...]
        fallbacks: [gpt-support]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.loop_settings import LoopSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetConfig(_Strict):
    kind: Literal["vllm", "openai"]
    base_url: str | None = None
    base_urls: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    timeout_s: float = 60.0  # whole request (a stream included)
    connect_timeout_s: float = 5.0
    ttft_timeout_s: float | None = None  # until the first streamed chunk; None = timeout_s
    # circuit breaker per replica: open after this many failures in a row, probe after cooldown
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    # vLLM: ask replicas which adapters they hold, and load missing ones (see router docs)
    adapter_aware: bool = True
    max_connections: int = 256
    # `tuneloop serve` starts the embedded engine for this target (on its first base URL's port)
    embedded: bool = False
    # USD per 1M tokens, optional: {input, cached_input, output}
    prices: dict[str, float] = Field(default_factory=dict)
    # the target serves OpenAI's Responses API (POST /v1/responses) itself, so /v1/responses requests
    # are passed through to it (gateway.api.responses_native) rather than translated onto chat
    # completions; None = the kind's default: true for openai, false for vllm (`tuneloop engine` and
    # vLLM before 0.10 do not serve it; a vLLM >= 0.10 target may set true)
    responses_api: bool | None = None

    @model_validator(mode="after")
    def _one_url_list(self) -> TargetConfig:
        if self.base_url and not self.base_urls:
            self.base_urls = [self.base_url]
        if self.kind == "vllm" and not self.base_urls:
            raise ValueError("a vllm target needs base_urls")
        if self.kind == "openai" and not self.base_urls:
            self.base_urls = ["https://api.openai.com/v1"]
        self.base_urls = [u.rstrip("/") for u in self.base_urls]
        if self.responses_api is None:
            self.responses_api = self.kind == "openai"
        return self


class RouteConfig(_Strict):
    target: str
    model: str
    weight: float = Field(default=1.0, ge=0)
    # vLLM targets: where the adapter lives, so a replica that lacks it can load it on demand
    lora_path: str | None = None


class ShadowConfig(_Strict):
    model: str  # another name from `models`, called with a copy of the request
    share: float = Field(default=1.0, ge=0, le=1)  # fraction of requests mirrored


LogPolicy = Literal["all", "store", "none"]


class ModelConfig(_Strict):
    routes: list[RouteConfig]
    fallbacks: list[str] = Field(default_factory=list)
    # what the interaction log keeps for this model: every request, only `store: true`, nothing
    log: LogPolicy = "all"
    owned_by: str = "tuneloop"
    redact_pii: bool = False  # scrub PII from what the log stores for this model
    retries: int = Field(default=1, ge=0, le=10)  # extra tries of the same route before falling back
    retry_budget_s: float = 30.0  # no new try starts after this long
    shadow: ShadowConfig | None = None
    # who owns the alias, and whose traffic and feedback the loop may train it on (default: the
    # owner's project only), so no other tenant can steer a shared adapter
    project: str = Field(default="default", min_length=1, max_length=128)
    train_on_projects: list[str] | None = None

    def training_projects(self) -> list[str]:
        return list(self.train_on_projects) if self.train_on_projects is not None else [self.project]


class BaseModelConfig(_Strict):
    """One base model of the catalog (``base_models:``): what a fine-tuning job's ``model`` names."""

    path: str  # the weights' folder (what the serving targets' ``--model`` is)
    targets: list[str] = Field(default_factory=list)  # targets serving it (default: found from their /v1/models)
    max_lora_rank: int = Field(default=16, ge=1, le=512)  # the targets' --max-lora-rank
    adapters_dir: str | None = None  # where adapters trained on it go (a folder its targets read)


class GatewayConfig(_Strict):
    database_url: str | None = None
    redis_url: str | None = None
    # while Redis (the rate-limit store) is unreachable: "open" enforces each key's limits per replica
    # in memory (N replicas: up to N x a limit), "closed" refuses limited keys with 503
    # (gateway.limits_failover). TUNELOOP_REDIS_FAILURE wins
    redis_failure: Literal["open", "closed"] = "open"
    # auto (default) | required (on) | off (none: only when set, and start-up warns); TUNELOOP_AUTH wins
    auth: Literal["auto", "required", "on", "off", "none"] | None = None
    # /metrics answers only requests with a valid API key (Prometheus: authorization.credentials)
    metrics_auth: bool = False
    # days the log keeps interactions, per project ("*": the others); a number: every project
    retention_days: dict[str, float] = Field(default_factory=dict)
    # USD per 1M tokens for targets without `prices` (so that USD budgets hold there too)
    default_prices: dict[str, float] = Field(default_factory=dict)
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    # the base models jobs train on: served name -> weights folder (or the long form, BaseModelConfig)
    base_models: dict[str, BaseModelConfig] = Field(default_factory=dict)
    # the loop's settings per alias (see gateway/loop_settings.py)
    loop: dict[str, LoopSettings] = Field(default_factory=dict)

    @field_validator("auth", mode="before")
    @classmethod
    def _yaml_bool(cls, value: object) -> object:
        """YAML reads a bare ``auth: off`` as false and ``auth: on`` as true."""
        if isinstance(value, bool):
            return "required" if value else "off"
        return value

    @field_validator("retention_days", mode="before")
    @classmethod
    def _all_projects(cls, value: object) -> object:
        """``retention_days: 90`` is ``{"*": 90}``; every value must be positive."""
        days = {"*": value} if isinstance(value, int | float) and not isinstance(value, bool) else value
        if isinstance(days, dict) and any(not isinstance(v, int | float) or v <= 0 for v in days.values()):
            raise ValueError("retention_days must be positive numbers of days")
        return days

    @field_validator("base_models", mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        """``NAME: PATH`` is ``NAME: {path: PATH}``."""
        if isinstance(value, dict):
            return {k: {"path": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _base_model_targets_exist(self) -> GatewayConfig:
        for name, base in self.base_models.items():
            for target in base.targets:
                if target not in self.targets:
                    raise ValueError(f"base model {name!r} is served by unknown target {target!r}")
        return self

    @model_validator(mode="after")
    def _references_exist(self) -> GatewayConfig:
        for name, model in self.models.items():
            if not model.routes:
                raise ValueError(f"model {name!r} has no routes")
            for route in model.routes:
                if route.target not in self.targets:
                    raise ValueError(f"model {name!r} routes to unknown target {route.target!r}")
            for fb in model.fallbacks:
                if fb not in self.models:
                    raise ValueError(f"model {name!r} falls back to unknown model {fb!r}")
            if model.shadow and model.shadow.model not in self.models:
                raise ValueError(f"model {name!r} shadows unknown model {model.shadow.model!r}")
        return self

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        data = yaml.safe_load(path.read_text()) or {}
        return cls.model_validate(data)


DEFAULT_MODEL = "smollm2-135m-instruct"


def bearer(api_key_env: str | None) -> dict[str, str]:
    """The ``Authorization`` header for a target whose key is in ``$api_key_env`` (none if unset)."""
    key = os.environ.get(api_key_env) if api_key_env else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def embedded_default(engine_port: int) -> GatewayConfig:
    """The config `tuneloop serve` uses without a file: the local engine, SQLite."""
    return GatewayConfig.model_validate(
        {
            "targets": {
                "local": {"kind": "vllm", "base_urls": [f"http://127.0.0.1:{engine_port}/v1"],
                          "embedded": True, "timeout_s": 300}
            },
            "models": {DEFAULT_MODEL: {"routes": [{"target": "local", "model": DEFAULT_MODEL}]}},
        }
    )
