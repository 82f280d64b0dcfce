"""Upstream providers, one module each, registered by target kind."""

from __future__ import annotations

from gateway.config import TargetConfig
from gateway.providers.base import Provider
from gateway.providers.openai import OpenAIProvider
from gateway.providers.vllm import VLLMProvider

PROVIDERS: dict[str, type] = {"vllm": VLLMProvider, "openai": OpenAIProvider}


def make_provider(name: str, cfg: TargetConfig) -> Provider:
    return PROVIDERS[cfg.kind](name, cfg)
