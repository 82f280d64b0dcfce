"""Which checkpoints the engine's batched forward serves, and what each family's forward needs.

Supported ``architectures`` (config.json) and how they differ from Llama, as in
``transformers``' modeling code (v5):

* ``LlamaForCausalLM``: q/k/v/o biases when ``attention_bias``, MLP biases when ``mlp_bias``;
  rope ``default``, ``linear``, ``dynamic``, ``yarn`` or ``llama3`` (Llama 3.1+).
* ``MistralForCausalLM``: no biases; ``sliding_window`` (when set) on every layer.
* ``Qwen2ForCausalLM``: q/k/v biases (never o); sliding window only on the layers
  ``layer_types`` marks ``sliding_attention`` (``use_sliding_window``).
* ``Qwen3ForCausalLM``: RMSNorm over each head's q and k (``q_norm``/``k_norm``) before rope;
  q/k/v/o biases when ``attention_bias``; sliding windows as Qwen2.

Anything else is refused at start with :class:`ModelError` naming these.  Rope types whose
frequencies change with the position (``longrope``) are refused too; ``dynamic`` is exact
only up to ``max_position_embeddings``, which is the engine's context limit anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUPPORTED: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
# Projections an adapter may target (vLLM's packed_modules_mapping for these families).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


class ModelError(ValueError):
    """The checkpoint cannot be served by this engine (refused at start)."""


@dataclass(frozen=True)
class Arch:
    architecture: str
    family: str
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    rope_type: str
    windows: tuple[int | None, ...]  # per layer: sliding window, None for full attention


def supported_text() -> str:
    return ", ".join(SUPPORTED)


def unsupported(archs: list[str]) -> ModelError:
    return ModelError(f"Unsupported model architecture {', '.join(map(str, archs))}: this engine serves "
                      f"{supported_text()} (the `architectures` field of config.json).")


def rope_parameters(config: Any) -> dict[str, Any]:
    """The rope dict (``rope_parameters`` in transformers v5, ``rope_scaling`` before)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(params) if isinstance(params, dict) else {}


def resolve(config: Any) -> Arch:
    """Check a ``transformers`` config against what the forward supports; describe its family."""
    archs = list(getattr(config, "architectures", None) or [])
    name = next((a for a in archs if a in SUPPORTED), None)
    if name is None:
        raise unsupported(archs or [f"model_type {getattr(config, 'model_type', '?')!r}"])
    family = SUPPORTED[name]
    if getattr(config, "model_type", family) != family:
        raise ModelError(f"config.json says {name} but model_type {config.model_type!r}; expected {family!r}.")
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise ModelError(f"Unsupported hidden_act {act!r} for {name}: the engine's MLP is SwiGLU (silu).")
    rope = rope_parameters(config)
    if float(rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        raise ModelError("Unsupported partial_rotary_factor: the engine rotates whole heads.")
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ROPE_TYPES:
        raise ModelError(f"Unsupported rope type {rope_type!r}: the engine supports {', '.join(ROPE_TYPES)}.")
    attn_bias = bool(getattr(config, "attention_bias", False))
    return Arch(
        architecture=name,
        family=family,
        qkv_bias=attn_bias or family == "qwen2",
        o_bias=attn_bias and family != "qwen2",
        mlp_bias=family == "llama" and bool(getattr(config, "mlp_bias", False)),
        qk_norm=family == "qwen3",
        rope_type=rope_type,
        windows=_windows(config, family),
    )


def _windows(config: Any, family: str) -> tuple[int | None, ...]:
    n = int(config.num_hidden_layers)
    window = getattr(config, "sliding_window", None)
    if family == "llama" or not window:
        return (None,) * n
    if family == "mistral":
        return (int(window),) * n
    types = getattr(config, "layer_types", None) or []
    return tuple(int(window) if i < len(types) and types[i] == "sliding_attention" else None for i in range(n))
