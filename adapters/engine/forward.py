"""A batched forward for Llama-family checkpoints with a row-based KV cache.

Why not ``model.generate()`` or HF's ``forward``: continuous batching needs
requests of different lengths, at different positions, on different adapters,
to share one decode step and to join or leave between steps.  This module keeps
the weights of a Llama, Mistral, Qwen2 or Qwen3 checkpoint (q/k/v fused into one
matrix, gate/up into another; biases, Qwen3's q/k norms, sliding windows and
rope scaling as ``adapters.models.arch`` and ``adapters.engine.weights`` describe)
and runs:

* ``forward(tokens[n, T], start[n], rows)``: ``n`` sequences, ``T`` new tokens
  each (``T == 1`` is a decode step, ``T > 1`` a prefill of right-padded
  prompts), written into KV-cache rows ``rows`` at positions ``start..start+T``;
  each row attends to its own cache only (per-row mask), so a row's result does
  not depend on its batch-mates (exact in fp32; see ``results/engine.md``).
* LoRA through a :class:`~adapters.engine.lora.LoraBatch` that adds
  ``scale * B(A x)`` per row to the targeted projections.

The KV cache is one tensor ``[2, rows, kv_heads, capacity, head_dim]`` per
layer.  Rows are the running sequences, kept contiguous (``move_row`` compacts
after a sequence leaves); capacity grows by doubling, rounded to 64 positions,
and never past the cache's byte limit: a resize re-lays out one layer at a time,
so even mid-resize the cache holds at most its limit plus one layer
(the scheduler admits against ``limit * L / (L + 1)``; see ``admission.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adapters.engine.lora import LoraBatch
from adapters.engine.weights import Layer, load_weights, rope_frequencies
from adapters.models.hf import Checkpoint

ROUND = 64


class KVBudgetExceeded(RuntimeError):
    """A resize would take the KV cache past its byte limit (admission should have prevented it)."""


class KVCache:
    """Per-row keys and values for every layer; rows = running sequences."""

    def __init__(self, n_layers: int, n_kv: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 limit_bytes: int | None = None):
        self.dtype, self.device = dtype, device
        self.n_kv, self.head_dim = n_kv, head_dim
        self.limit_bytes = limit_bytes
        self.layers = [self._empty(0, 0) for _ in range(n_layers)]
        self.peak_bytes = 0  # the most the cache has held, mid-resize included

    def _empty(self, rows: int, capacity: int) -> torch.Tensor:
        return torch.zeros((2, rows, self.n_kv, capacity, self.head_dim), dtype=self.dtype, device=self.device)

    @property
    def rows(self) -> int:
        return self.layers[0].shape[1]

    @property
    def capacity(self) -> int:
        return self.layers[0].shape[3]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers)

    def bytes_per_position(self) -> int:
        """Bytes one row needs per position, over every layer."""
        return len(self.layers) * 2 * self.n_kv * self.head_dim * self.layers[0].element_size()

    def ensure(self, rows: int, capacity: int, live: int | None = None) -> None:
        """Hold at least ``rows`` rows and ``capacity`` positions, never past the byte limit.

        Capacity grows by doubling while that fits.  With ``live`` (the scheduler's call) ``rows`` is every
        live row and ``live`` the positions worth keeping, so stale rows and capacity left by earlier,
        longer sequences are dropped rather than exceeding the limit; without it everything is kept.
        Raises :class:`KVBudgetExceeded` when the request does not fit even so.
        """
        if rows <= self.rows and capacity <= self.capacity:
            return
        exact = live is not None
        need = _round_up(max(capacity, live if live is not None else self.capacity))
        new_rows = max(rows, self.rows)
        if exact and self._room(new_rows) < need:
            new_rows = rows
        if self._room(new_rows) < need:
            raise KVBudgetExceeded(f"{new_rows} rows x {need} positions x {self.bytes_per_position()} B exceed "
                                   f"the KV-cache limit of {self.limit_bytes} B")
        new_cap = self.capacity if self.capacity >= need else max(need, 2 * self.capacity)
        self._relayout(new_rows, max(need, min(new_cap, self._room(new_rows))))

    def _room(self, rows: int) -> int:
        """Positions per row that ``rows`` rows may have within the limit (rounded down)."""
        if self.limit_bytes is None or rows == 0:
            return 1 << 62
        return (self.limit_bytes // (rows * self.bytes_per_position())) // ROUND * ROUND

    def _relayout(self, rows: int, capacity: int) -> None:
        """Copy into the new shape one layer at a time (each old layer is freed before the next is made)."""
        r, c = min(rows, self.rows), min(capacity, self.capacity)
        for i, old in enumerate(self.layers):
            grown = self._empty(rows, capacity)
            self.peak_bytes = max(self.peak_bytes, self.nbytes + grown.numel() * grown.element_size())
            grown[:, :r, :, :c] = old[:, :r, :, :c]
            self.layers[i] = grown
            del old

    def shrink(self) -> None:
        """Release memory when idle."""
        self.layers = [self._empty(0, 0) for _ in self.layers]

    def move_row(self, src: int, dst: int) -> None:
        for t in self.layers:
            t[:, dst] = t[:, src]

    def read(self, row: int, length: int) -> torch.Tensor:
        """A copy of ``row``'s first ``length`` positions: ``[layers, 2, kv_heads, length, head_dim]``."""
        return torch.stack([t[:, row, :, :length] for t in self.layers])

    def write(self, row: int, kv: torch.Tensor, length: int) -> None:
        """Copy ``kv[..., :length, :]`` (as :meth:`read` returns it) into ``row``."""
        for i, t in enumerate(self.layers):
            t[:, row, :, :length] = kv[i, :, :, :length]


def _round_up(n: int) -> int:
    return -(-n // ROUND) * ROUND


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it: normalised in fp32, cast back, then scaled. In fp32 that is
    exactly torch's fused ``rms_norm`` (one op instead of six: the decode step makes 61 of them)."""
    if x.dtype == torch.float32 and w.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    xf = x.float()
    var = xf.pow(2).mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(var + eps)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class BatchedLlama:
    """Weights of a Llama-family model and a batched, cache-aware forward pass."""

    def __init__(self, ckpt: Checkpoint, dtype: torch.dtype, device: torch.device, max_len: int | None = None):
        cfg = ckpt.config
        self.config, self.arch = cfg, ckpt.arch
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.hidden = cfg.hidden_size
        self.head_dim = getattr(cfg, "head_dim", None) or self.hidden // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.max_len = min(max_len or cfg.max_position_embeddings, cfg.max_position_embeddings)
        self.q_dim = self.n_heads * self.head_dim
        self.kv_dim = self.n_kv * self.head_dim
        self.intermediate = cfg.intermediate_size
        self.dtype, self.device = dtype, torch.device(device)
        w = load_weights(ckpt, dtype, self.device, self.max_len)
        self.embed, self.lm_head, self.norm = w.embed, w.lm_head, w.norm
        self.layers: list[Layer] = w.layers
        inv_freq, self.rope_scale = rope_frequencies(cfg, ckpt.arch.rope_type, self.head_dim)
        self.inv_freq = inv_freq.to(self.device)
        self.cache = KVCache(self.n_layers, self.n_kv, self.head_dim, self.dtype, self.device)
        # Shapes of every LoRA-able projection: name -> (in_features, out_features).
        self.lora_shapes = {
            "q_proj": (self.hidden, self.q_dim),
            "k_proj": (self.hidden, self.kv_dim),
            "v_proj": (self.hidden, self.kv_dim),
            "o_proj": (self.q_dim, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }

    @torch.inference_mode()
    def forward(
        self,
        tokens: torch.Tensor,
        start: torch.Tensor,
        row0: int,
        lora: LoraBatch | None = None,
        last: torch.Tensor | None = None,
        every: bool = False,
    ) -> torch.Tensor:
        """Run ``tokens[n, T]`` for cache rows ``row0..row0+n``; return logits ``[n, vocab]``.

        Row ``i`` holds positions ``start[i] .. start[i] + T``; ``last[i]`` (default
        ``T - 1``) picks which of its ``T`` outputs becomes the logits (prompts
        are right-padded, so the last real token of a short prompt is earlier).
        ``every``: the logits of every position, ``[n, T, vocab]`` (prompt logprobs).
        """
        n, T = tokens.shape
        dev = self.device
        tokens = tokens.to(dev)
        start = start.to(dev)
        pos = start[:, None] + torch.arange(T, device=dev)[None, :]  # [n, T]
        end = int(start.max()) + T
        span = -(-end // ROUND) * ROUND
        cos, sin = self._rope(pos)  # [n, 1, T, d]
        group = self.n_heads // self.n_kv
        masks = {w: self._mask(pos, span, group, w) for w in {layer.window for layer in self.layers}}
        self.cache.ensure(row0 + n, span)  # a no-op under the scheduler, which sizes the cache first
        rows = torch.arange(row0, row0 + n, device=dev)
        scale = self.head_dim**-0.5
        x = self.embed[tokens]  # [n, T, hidden]
        for li, layer in enumerate(self.layers):
            h = _rms(x, layer.ln1, self.eps)
            qkv = h @ layer.wqkv.T
            if layer.bqkv is not None:
                qkv += layer.bqkv
            if lora is not None:
                lora.apply(li, "q_proj", h, qkv[..., : self.q_dim])
                lora.apply(li, "k_proj", h, qkv[..., self.q_dim : self.q_dim + self.kv_dim])
                lora.apply(li, "v_proj", h, qkv[..., self.q_dim + self.kv_dim :])
            q, k, v = qkv.split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
            q = q.view(n, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = k.view(n, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = v.view(n, T, self.n_kv, self.head_dim).transpose(1, 2)
            if layer.q_norm is not None and layer.k_norm is not None:  # both or neither (Qwen3)
                q, k = _rms(q, layer.q_norm, self.eps), _rms(k, layer.k_norm, self.eps)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            kv = self.cache.layers[li]  # [2, rows, kv, cap, d]
            kv[0, rows[:, None], :, pos] = k.transpose(1, 2)
            kv[1, rows[:, None], :, pos] = v.transpose(1, 2)
            K = kv[0, row0 : row0 + n, :, :span]  # [n, kv, span, d]
            V = kv[1, row0 : row0 + n, :, :span]
            qg = q.reshape(n, self.n_kv, group * T, self.head_dim)
            s = (qg @ K.transpose(-1, -2)) * scale + masks[layer.window]  # [n, kv, g*T, span]
            a = torch.softmax(s, dim=-1) @ V  # [n, kv, g*T, d]
            a = a.reshape(n, self.n_heads, T, self.head_dim).transpose(1, 2).reshape(n, T, self.q_dim)
            o = a @ layer.wo.T
            if layer.bo is not None:
                o += layer.bo
            if lora is not None:
                lora.apply(li, "o_proj", a, o)
            x = x + o
            h = _rms(x, layer.ln2, self.eps)
            gu = h @ layer.wgu.T
            if layer.bgu is not None:
                gu += layer.bgu
            if lora is not None:
                lora.apply(li, "gate_proj", h, gu[..., : self.intermediate])
                lora.apply(li, "up_proj", h, gu[..., self.intermediate :])
            g, u = gu.split([self.intermediate, self.intermediate], dim=-1)
            m = F.silu(g) * u
            d = m @ layer.wd.T
            if layer.bd is not None:
                d += layer.bd
            if lora is not None:
                lora.apply(li, "down_proj", m, d)
            x = x + d
        if every:
            xl = x
        elif last is None:
            xl = x[:, -1]
        else:
            xl = x[torch.arange(n, device=dev), last.to(dev)]
        xl = _rms(xl, self.norm, self.eps)
        return (xl @ self.lm_head.T).float()

    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[n, 1, T, head_dim]`` at ``pos[n, T]``: fp32 as transformers computes them, then cast."""
        freqs = pos.float()[..., None] * self.inv_freq  # [n, T, d / 2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        return (emb.cos() * self.rope_scale).to(self.dtype), (emb.sin() * self.rope_scale).to(self.dtype)

    def _mask(self, pos: torch.Tensor, span: int, group: int, window: int | None) -> torch.Tensor:
        """Additive mask ``[n, 1, group * T, span]`` (query rows are (group, T) pairs of one kv head):
        causal, and with a sliding ``window`` only the last ``window`` positions (transformers'
        ``kv_idx > q_idx - sliding_window``)."""
        n, T = pos.shape
        keys = torch.arange(span, device=self.device)[None, None, :]
        allowed = keys <= pos[:, :, None]  # [n, T, span]
        if window is not None:
            allowed &= keys > pos[:, :, None] - window
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, float("-inf"))
        return mask[:, None].expand(n, group, T, span).reshape(n, 1, group * T, span)
