"""Hot-load an adapter into every replica of a vLLM-contract target (vLLM or the local engine).

``POST {base_url}/load_lora_adapter {lora_name, lora_path}`` on each base URL; a replica
that already holds the name (its ``/v1/models`` lists it) is left alone. No restart, and
the weights are read once per replica. Used by promotion (``gateway.promotion``: the CLI and the console).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from gateway.config import GatewayConfig, bearer

log = logging.getLogger(__name__)


class HotLoadError(RuntimeError):
    pass


def _has(client: httpx.Client, base_url: str, name: str) -> bool:
    resp = client.get(f"{base_url}/models")
    resp.raise_for_status()
    return any(m.get("id") == name for m in resp.json().get("data", []))


def load_into_target(config: GatewayConfig, target: str, name: str, path: str,
                     timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Load ``name`` from ``path`` on every replica of ``target``; returns one outcome per replica."""
    cfg = config.targets.get(target)
    if cfg is None:
        raise HotLoadError(f"unknown target {target!r}")
    if cfg.kind != "vllm":
        return [{"target": target, "base_url": u, "outcome": "skipped (not a vLLM target)"} for u in cfg.base_urls]
    outcomes = []
    with httpx.Client(timeout=timeout_s, headers=bearer(cfg.api_key_env)) as client:  # vLLM's --api-key
        for base_url in cfg.base_urls:
            try:
                if _has(client, base_url, name):
                    outcomes.append({"target": target, "base_url": base_url, "outcome": "already loaded"})
                    continue
                resp = client.post(f"{base_url}/load_lora_adapter", json={"lora_name": name, "lora_path": path})
            except httpx.HTTPError as exc:
                raise HotLoadError(f"{base_url}: {exc}") from exc
            if resp.status_code != 200 and "already" not in resp.text:
                raise HotLoadError(f"{base_url}: HTTP {resp.status_code}: {resp.text[:300]}")
            outcomes.append({"target": target, "base_url": base_url, "outcome": "loaded"})
            log.info("loaded adapter %s on %s", name, base_url)
    return outcomes
