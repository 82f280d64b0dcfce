"""A checkpoint's weights laid out for the batched forward: q/k/v fused, gate/up fused, biases, q/k norms.

:func:`load_weights` reads a :class:`~adapters.models.hf.Checkpoint` one tensor at a time
(converted to the engine's dtype and device as it is read), fusing the projections the
forward multiplies together.  Tied embeddings (``tie_word_embeddings``) reuse the embedding
matrix as the LM head, as ``transformers`` does whether or not the file also holds one.

:func:`rope_frequencies` gives rope's inverse frequencies and the cos/sin scale for the
config's ``rope_type``: ``default`` as every family's ``compute_default_rope_parameters``,
the others (``linear``, ``dynamic``, ``yarn``, ``llama3``) through ``transformers``'
``ROPE_INIT_FUNCTIONS``, the code its models run, so Llama 3.x's scaled frequencies are
bit-for-bit the ones ``generate()`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.models.arch import rope_parameters
from adapters.models.hf import Checkpoint


@dataclass
class Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor  # [q + k + v, hidden]
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor  # [2 * intermediate, hidden]
    wd: torch.Tensor
    bqkv: torch.Tensor | None = None  # Qwen2; Llama/Qwen3 with attention_bias
    bo: torch.Tensor | None = None
    bgu: torch.Tensor | None = None  # Llama with mlp_bias
    bd: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None  # Qwen3: RMSNorm over each head's q and k
    k_norm: torch.Tensor | None = None
    window: int | None = None  # sliding window (Mistral, Qwen sliding layers); None: full attention


@dataclass
class ModelWeights:
    embed: torch.Tensor
    lm_head: torch.Tensor
    norm: torch.Tensor
    layers: list[Layer]


def load_weights(ckpt: Checkpoint, dtype: torch.dtype, device: torch.device, max_len: int) -> ModelWeights:
    """Read every tensor the forward needs; a window no shorter than ``max_len`` is full attention."""
    w, arch = ckpt.weights, ckpt.arch

    def get(name: str) -> torch.Tensor:
        return w.get(name, dtype, device)

    def cat(*names: str) -> torch.Tensor:
        return torch.cat([get(n) for n in names])

    embed = get("model.embed_tokens.weight")
    tied = bool(getattr(ckpt.config, "tie_word_embeddings", False)) or "lm_head.weight" not in w
    layers = []
    for i, window in enumerate(arch.windows):
        p = f"model.layers.{i}."
        a, m = p + "self_attn.", p + "mlp."
        layers.append(Layer(
            ln1=get(p + "input_layernorm.weight"),
            wqkv=cat(a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"),
            wo=get(a + "o_proj.weight"),
            ln2=get(p + "post_attention_layernorm.weight"),
            wgu=cat(m + "gate_proj.weight", m + "up_proj.weight"),
            wd=get(m + "down_proj.weight"),
            bqkv=cat(a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias") if arch.qkv_bias else None,
            bo=get(a + "o_proj.bias") if arch.o_bias else None,
            bgu=cat(m + "gate_proj.bias", m + "up_proj.bias") if arch.mlp_bias else None,
            bd=get(m + "down_proj.bias") if arch.mlp_bias else None,
            q_norm=get(a + "q_norm.weight") if arch.qk_norm else None,
            k_norm=get(a + "k_norm.weight") if arch.qk_norm else None,
            window=window if window is not None and window < max_len else None,
        ))
    weights = ModelWeights(embed=embed, lm_head=embed if tied else get("lm_head.weight"),
                           norm=get("model.norm.weight"), layers=layers)
    w.close()
    return weights


def rope_frequencies(config: object, rope_type: str, head_dim: int) -> tuple[torch.Tensor, float]:
    """``(inv_freq[head_dim // 2], attention_scaling)`` in float32, as ``transformers`` computes them."""
    if rope_type == "default":
        theta = float(rope_parameters(config).get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)
        exps = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        return 1.0 / (theta**exps), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    inv, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
    return inv.float(), float(scaling)
