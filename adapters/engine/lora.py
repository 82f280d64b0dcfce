"""LoRA adapters: reading peft folders, the registry with its LRU, batched application.

* :func:`read_adapter` reads a peft LoRA folder (``adapter_config.json`` +
  ``adapter_model.safetensors``) and checks it as vLLM's LoRA loader does: rank
  at most ``--max-lora-rank`` (``PEFTHelper.validate_legal``), target modules
  among q/k/v/o/gate/up/down (``LoRAModel.from_local_checkpoint``), ``bias``
  ``none`` and no ``modules_to_save``; then every tensor against the base
  model's projection shapes, so an adapter trained for another base model is
  refused (:class:`AdapterError`, HTTP 400; no ``adapter_config.json``: :class:`AdapterMissing`, 404).
* :class:`AdapterRegistry` maps names to folders.  Like vLLM's
  ``--max-cpu-loras`` it holds at most ``max_cpu_loras`` adapters' weights in
  memory, evicting the least recently used; an evicted adapter stays
  registered and is re-read from disk when a request names it.  The scheduler
  enforces ``--max-loras`` (distinct adapters per batch).
* :class:`LoraBatch` applies many adapters to one batch (punica's idea in plain
  torch): for each projection the batch's adapters' ``A`` matrices are
  concatenated, so ``delta = ((x @ A_cat.T) * mask) @ B_cat.T`` is two dense
  matmuls whatever the mix; ``mask[row]`` holds the row's adapter ``scale`` on
  that adapter's columns and zeros elsewhere, so base-model rows get an exact
  zero and a row never sees a batch-mate's adapter.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import torch
from safetensors.torch import load_file

from adapters.models.arch import LORA_TARGETS

_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.[\w-]+)?\.weight$")
_ids = count(1)


class AdapterError(Exception):
    """The folder is not a LoRA adapter usable with this base model (HTTP 400)."""

    status = 400


class AdapterMissing(AdapterError):
    """No adapter at that path: no ``adapter_config.json`` (HTTP 404, vLLM's ``LoRAAdapterNotFoundError``)."""

    status = 404


class AdapterNotFound(KeyError):
    """No adapter of that name is registered (HTTP 404)."""


@dataclass
class LoraWeights:
    """One adapter: per projection, ``A[layers, r, in]`` and ``B[layers, out, r]`` (scale folded into B)."""

    name: str
    path: Path
    rank: int
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    id: int = field(default_factory=lambda: next(_ids))


def _alpha_for(module: str, cfg: dict) -> tuple[int | None, float]:
    for pat, val in (cfg.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pat}$", module):
            return None, float(val)
    return None, float(cfg.get("lora_alpha") or cfg.get("r") or 8)


def check_config(path: Path, cfg: dict, max_rank: int | None) -> None:
    """vLLM's rules for an adapter's config (rank, targets, bias, modules_to_save); AdapterError if broken."""
    ranks = [int(cfg.get("r") or 0), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    if max_rank is not None and max(ranks) > max_rank:
        raise AdapterError(f"LoRA rank {max(ranks)} is greater than max_lora_rank {max_rank} "
                           f"(adapter at {path}; start the engine with a larger --max-lora-rank).")
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        unexpected = sorted({str(t).split(".")[-1] for t in targets} - set(LORA_TARGETS))
        if unexpected:
            raise AdapterError(f"While loading {path}, expected target modules in {list(LORA_TARGETS)} but "
                               f"received {unexpected}. Please verify that the loaded LoRA module is correct.")
    if str(cfg.get("bias") or "none") != "none":
        raise AdapterError(f"Adapter at {path} trains biases (bias={cfg.get('bias')!r}); only bias='none' "
                           "is supported.")
    if cfg.get("modules_to_save"):
        raise AdapterError(f"Adapter at {path} has modules_to_save {cfg.get('modules_to_save')}, which this "
                           "engine (like vLLM) cannot serve.")


def read_adapter(
    name: str, path: Path, shapes: dict[str, tuple[int, int]], n_layers: int, dtype: torch.dtype,
    device: torch.device, max_rank: int | None = None,
) -> LoraWeights:
    """Read and check a peft LoRA folder; raise :class:`AdapterError` if unusable."""
    path = Path(path)
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():  # vLLM's message and status (404) for a missing adapter
        raise AdapterMissing(f"Loading lora {name} failed: No adapter found for {path}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Invalid adapter_config.json in {path}: {exc}") from exc
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterError(f"Adapter at {path} is {cfg.get('peft_type')}, only LoRA is supported.")
    if cfg.get("use_dora"):
        raise AdapterError(f"Adapter at {path} uses DoRA, which this engine does not support.")
    check_config(path, cfg, max_rank)
    tensors = _read_tensors(path)
    per: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key, t in tensors.items():
        m = _KEY.search(key)
        if m is None:
            if "lora_" in key or "modules_to_save" in key:
                raise AdapterError(f"Adapter at {path} has unsupported weight {key}.")
            continue
        layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
        if module not in shapes or layer >= n_layers:
            raise AdapterError(f"Adapter at {path} does not fit the base model: unexpected weight {key}.")
        per.setdefault(module, {}).setdefault(layer, {})[ab] = t
    if not per:
        raise AdapterError(f"Adapter at {path} holds no LoRA weights.")
    A: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}
    rank = 0
    for module, layers in per.items():
        fan_in, fan_out = shapes[module]
        r = max(t.shape[0] for lw in layers.values() for k, t in lw.items() if k == "A")
        a_all = torch.zeros(n_layers, r, fan_in, dtype=torch.float32)
        b_all = torch.zeros(n_layers, fan_out, r, dtype=torch.float32)
        for li, lw in layers.items():
            if set(lw) != {"A", "B"}:
                raise AdapterError(f"Adapter at {path}: {module} of layer {li} lacks lora_A or lora_B.")
            a, b = lw["A"].float(), lw["B"].float()
            if a.shape[1] != fan_in or b.shape[0] != fan_out or a.shape[0] != b.shape[1]:
                raise AdapterError(
                    f"Adapter at {path} was trained for another base model: {module} has shapes "
                    f"A{tuple(a.shape)} B{tuple(b.shape)}, expected in={fan_in} out={fan_out}."
                )
            ri = a.shape[0]
            if max_rank is not None and ri > max_rank:
                raise AdapterError(f"LoRA rank {ri} is greater than max_lora_rank {max_rank} (adapter at {path}).")
            alpha = _alpha_for(f"layers.{li}.{module}", cfg)[1]
            scale = alpha / (ri**0.5) if cfg.get("use_rslora") else alpha / ri
            a_all[li, :ri] = a
            b_all[li, :, :ri] = b * scale
        A[module] = a_all.to(dtype=dtype, device=device)
        B[module] = b_all.to(dtype=dtype, device=device)
        rank = max(rank, r)
    return LoraWeights(name=name, path=path, rank=rank, A=A, B=B)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    st, bin_ = path / "adapter_model.safetensors", path / "adapter_model.bin"
    try:
        if st.is_file():
            return load_file(str(st))
        if bin_.is_file():
            return torch.load(bin_, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file is the client's problem, not ours
        raise AdapterError(f"Cannot read adapter weights in {path}: {exc}") from exc
    raise AdapterError(f"{path} doesn't contain tensors (no adapter_model.safetensors).")


class AdapterRegistry:
    """Registered adapters (name -> folder) and an LRU of those held in memory."""

    def __init__(self, shapes: dict[str, tuple[int, int]], n_layers: int, dtype: torch.dtype,
                 device: torch.device, max_cpu_loras: int = 64, max_rank: int | None = None, enabled: bool = True):
        self.shapes, self.n_layers, self.dtype, self.device = shapes, n_layers, dtype, device
        self.max_cpu_loras = max(1, max_cpu_loras)
        self.max_rank, self.enabled = max_rank, enabled
        self.paths: dict[str, Path] = {}
        self.parents: dict[str, str] = {}  # vLLM's base_model_name from --lora-modules' JSON form
        self.created: dict[str, int] = {}
        self._held: OrderedDict[str, LoraWeights] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    def _read(self, name: str, path: Path) -> LoraWeights:
        return read_adapter(name, path, self.shapes, self.n_layers, self.dtype, self.device, self.max_rank)

    def add(self, name: str, path: Path, created: int, parent: str | None = None) -> None:
        """Read, check and register an adapter; raise AdapterError (400) when unusable or taken."""
        if not self.enabled:
            raise AdapterError("LoRA is not enabled on this engine: start it with --enable-lora.")
        with self._lock:
            if name in self.paths:
                raise AdapterError(f"The lora adapter '{name}' has already been loaded.")
        weights = self._read(name, Path(path))
        with self._lock:
            if name in self.paths:
                raise AdapterError(f"The lora adapter '{name}' has already been loaded.")
            self.paths[name] = Path(path)
            self.created[name] = created
            if parent:
                self.parents[name] = parent
            self.loads += 1
            self._hold(weights)

    def replace(self, name: str, path: Path, created: int) -> None:
        """Swap in new weights for ``name`` (read and checked before the old ones go)."""
        weights = self._read(name, Path(path))
        with self._lock:
            self.paths[name] = Path(path)
            self.created[name] = created
            self.loads += 1
            self._hold(weights)

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self.paths:
                raise AdapterNotFound(name)
            del self.paths[name]
            self.created.pop(name, None)
            self.parents.pop(name, None)
            self._held.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self.paths

    def names(self) -> list[str]:
        with self._lock:
            return list(self.paths)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def get(self, name: str) -> LoraWeights:
        """Weights for ``name``, re-read from disk if they were evicted."""
        with self._lock:
            if name not in self.paths:
                raise AdapterNotFound(name)
            w = self._held.get(name)
            if w is not None:
                self._held.move_to_end(name)
                return w
            path = self.paths[name]
        w = self._read(name, path)
        with self._lock:
            self.loads += 1
            if name in self.paths:
                self._hold(w)
        return w

    def _hold(self, w: LoraWeights) -> None:
        self._held[w.name] = w
        self._held.move_to_end(w.name)
        while len(self._held) > self.max_cpu_loras:
            self._held.popitem(last=False)
            self.evictions += 1


class LoraBatch:
    """The adapters of one batch, ready for :meth:`apply` (rows without an adapter get zero)."""

    def __init__(self, row_adapters: list[LoraWeights | None], dtype: torch.dtype, device: torch.device):
        n = len(row_adapters)
        distinct: dict[int, LoraWeights] = {}
        for w in row_adapters:
            if w is not None:
                distinct.setdefault(w.id, w)
        modules = sorted({m for w in distinct.values() for m in w.A})
        self.A: dict[str, torch.Tensor] = {}
        self.B: dict[str, torch.Tensor] = {}
        self.mask: dict[str, torch.Tensor] = {}
        for mod in modules:
            users = [w for w in distinct.values() if mod in w.A]
            cols: dict[int, tuple[int, int]] = {}
            off = 0
            for w in users:
                r = w.A[mod].shape[1]
                cols[w.id] = (off, off + r)
                off += r
            mask = torch.zeros(n, 1, off, dtype=dtype)
            for i, w in enumerate(row_adapters):
                if w is not None and w.id in cols:
                    lo, hi = cols[w.id]
                    mask[i, 0, lo:hi] = 1.0
            self.A[mod] = torch.cat([w.A[mod] for w in users], dim=1).transpose(1, 2).contiguous()
            self.B[mod] = torch.cat([w.B[mod] for w in users], dim=2).transpose(1, 2).contiguous()
            self.mask[mod] = mask.to(device)

    def __bool__(self) -> bool:
        return bool(self.A)

    def apply(self, layer: int, module: str, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out += ((x @ A) * mask) @ B`` for this layer's ``module`` (in place)."""
        a = self.A.get(module)
        if a is None:
            return
        out += ((x @ a[layer]) * self.mask[module]) @ self.B[module][layer]
