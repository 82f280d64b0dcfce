"""A local job's hyperparameters: checked by the gateway when the job is created (a 400), read by the worker.

OpenAI's (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``, DPO's ``beta``) take
a number or ``"auto"``; the local trainer adds its own (``lora_r``, ``qlora``, ...). A key
the local trainer does not know is refused, never ignored. ``"auto"`` (or leaving a key
out) lets the trainer choose by the base's size (``base.size_defaults``). No torch here.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from gateway.catalog import BaseModel

# The modules vLLM loads LoRA weights for (Llama, Mistral, Qwen families): ``target_modules`` is checked
# against them here, and every adapter the trainer writes by ``adapters.training.vllm_rules``.
VLLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

INT, FLOAT, BOOL, MODULES = "int", "float", "bool", "modules"
KNOWN: dict[str, str] = {
    "n_epochs": INT, "batch_size": INT, "learning_rate_multiplier": FLOAT, "beta": FLOAT,
    "lora_r": INT, "lora_alpha": INT, "target_modules": MODULES, "learning_rate": FLOAT,
    "max_steps": INT, "max_length": INT, "micro_batch_size": INT, "warmup_steps": INT,
    "checkpoint_every": INT, "gradient_checkpointing": BOOL, "qlora": BOOL,
}
MAY_BE_ZERO = ("warmup_steps",)
# Upper bounds: OpenAI's (n_epochs, batch_size, beta), then ours, so that one job cannot hold a
# trainer for ever or ask for memory no machine has (lora_r is bounded by the base's max_lora_rank).
MAXIMA: dict[str, float] = {
    "n_epochs": 50, "batch_size": 256, "beta": 2, "learning_rate_multiplier": 10, "learning_rate": 10,
    "lora_alpha": 4096, "max_steps": 100_000, "max_length": 131_072, "micro_batch_size": 256,
    "warmup_steps": 100_000, "checkpoint_every": 100_000,
}


class HyperparameterError(ValueError):
    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def check(kind: str, hp: dict[str, Any], base: BaseModel) -> None:
    """Raise :class:`HyperparameterError` for the first value the local trainer cannot honour."""
    for key, value in hp.items():
        if key not in KNOWN:
            raise HyperparameterError(f"{key!r} is not a hyperparameter of local fine-tuning (known: "
                                      f"{', '.join(KNOWN)})", key)
        if key == "beta" and kind != "dpo":
            raise HyperparameterError("beta applies to method dpo only", key)
        if value == "auto":
            continue
        _check_value(key, KNOWN[key], value)
    rank = hp.get("lora_r")
    if isinstance(rank, int | float) and not isinstance(rank, bool) and rank > base.max_lora_rank:
        raise HyperparameterError(f"lora_r {rank} is above {base.max_lora_rank}, the --max-lora-rank of the "
                                  f"engines serving {base.name!r} (set max_lora_rank in its base_models entry)",
                                  "lora_r")
    if hp.get("qlora") is True and importlib.util.find_spec("bitsandbytes") is None:
        raise HyperparameterError("qlora (4-bit) needs bitsandbytes and a CUDA device; bitsandbytes is not "
                                  "installed where this gateway trains (pip install bitsandbytes)", "qlora")


def _check_value(key: str, kind: str, value: Any) -> None:
    if kind == BOOL:
        if not isinstance(value, bool):
            raise HyperparameterError(f"{key} must be true or false", key)
        return
    if kind == MODULES:
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v in VLLM_TARGETS for v in value)
        if not ok:
            raise HyperparameterError(f"{key} must be a non-empty list among {', '.join(VLLM_TARGETS)}", key)
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HyperparameterError(f"{key} must be a number or 'auto'", key)
    if kind == INT and value != int(value):
        raise HyperparameterError(f"{key} must be a whole number", key)
    if value < 0 or (value == 0 and key not in MAY_BE_ZERO):
        raise HyperparameterError(f"{key} must be positive", key)
    if key in MAXIMA and value > MAXIMA[key]:
        raise HyperparameterError(f"{key} must be at most {MAXIMA[key]:g}", key)


def to_config(hp: dict[str, Any]) -> dict[str, Any]:
    """``TrainConfig`` fields from checked hyperparameters (``"auto"`` left out: the trainer chooses)."""
    out: dict[str, Any] = {}
    for key, value in hp.items():
        if value == "auto" or key not in KNOWN:
            continue
        kind = KNOWN[key]
        out[key] = int(value) if kind == INT else float(value) if kind == FLOAT else value
    return out
