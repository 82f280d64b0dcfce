"""The loop's settings for one alias, from the gateway config's ``loop:`` section.

The schema lives with the config (``gateway/loop_settings.py``), so the one YAML file is
validated as a whole when any command loads it.
"""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.loop_settings import CanarySettings, DatasetSettings, EvalSettings, LoopSettings

__all__ = ["CanarySettings", "DatasetSettings", "EvalSettings", "LoopSettings", "load"]


def load(config: GatewayConfig, alias: str) -> LoopSettings:
    """A fresh copy (callers adjust it, e.g. ``migrate``) of the alias' settings or the defaults."""
    found = config.loop.get(alias)
    return found.model_copy(deep=True) if found is not None else LoopSettings()
