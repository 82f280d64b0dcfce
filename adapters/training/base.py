"""The base a job trains on: any local Hugging Face checkpoint (or the embedded SmolLM2), with LoRA.

    model, tok, info = load(base, cfg, device, home)

``AutoModelForCausalLM.from_pretrained(path)`` and the checkpoint's own tokenizer and chat
template; fp32 on CPU, bf16 on CUDA (the LoRA weights stay fp32: peft's
``autocast_adapter_dtype``); gradient checkpointing when asked (non-reentrant, so it works
under DDP); 4-bit QLoRA (NF4 through ``bitsandbytes``) only on CUDA with ``bitsandbytes``
installed, else a clear error. The LoRA is what vLLM loads (see ``vllm_rules``): targets
among q/k/v/o/gate/up/down_proj, ``bias="none"``, no ``modules_to_save``.

:func:`size_defaults` picks rank, learning rate and batch by the base's size, read from its
files before loading (gradient checkpointing must be chosen at load time).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from gateway.catalog import BaseModel
from gateway.hyperparameters import VLLM_TARGETS

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def weights(base: BaseModel, home: Path | None = None) -> str:
    """What ``from_pretrained`` loads: the folder (or hub id); the embedded default's cache copy."""
    if base.path is not None:
        return base.path
    from adapters.engine.model import default_home, ensure_cached

    return str(ensure_cached(home or default_home()))


class BaseModelError(ValueError):
    """The base cannot be trained here (the job fails with this message)."""


def size_defaults(n_params: float, device_type: str) -> dict[str, Any]:
    """Auto hyperparameters by size: small bases take a higher learning rate and attention-only
    LoRA; billions of parameters take all seven projections (QLoRA paper), rank 16 (vLLM's
    default --max-lora-rank), micro-batches and gradient checkpointing on GPU."""
    if n_params < 1e9:
        return {"lora_r": 8, "lora_alpha": 16, "learning_rate": 2e-4, "batch_size": 8, "micro_batch_size": 8,
                "target_modules": ATTENTION, "gradient_checkpointing": False}
    gpu = device_type == "cuda"
    if n_params < 15e9:
        return {"lora_r": 16, "lora_alpha": 32, "learning_rate": 1e-4, "batch_size": 16,
                "micro_batch_size": 4 if gpu else 2, "target_modules": list(VLLM_TARGETS),
                "gradient_checkpointing": gpu}
    return {"lora_r": 16, "lora_alpha": 32, "learning_rate": 5e-5, "batch_size": 16, "micro_batch_size": 1,
            "target_modules": list(VLLM_TARGETS), "gradient_checkpointing": gpu}


def count_params(folder: str) -> float:
    """Parameters, from the safetensors files' size and the config's dtype (no load). A Hugging
    Face id is downloaded first (into ``HF_HOME``, where ``from_pretrained`` then finds it)."""
    path = Path(folder)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(folder, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model"]))
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
    if not files:
        return 0.0
    cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    width = 4 if "32" in dtype else 2
    return sum(f.stat().st_size for f in files) / width


def load(base: BaseModel, cfg: Any, device: torch.device, home: Path | None) -> tuple[Any, Any, dict[str, Any]]:
    """The base with a fresh LoRA on ``device``, its tokenizer, and what ``tuneloop.json`` records."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = weights(base, home)
    tok = AutoTokenizer.from_pretrained(folder)
    if not tok.chat_template:
        raise BaseModelError(f"base {base.name!r} ({folder}) has no chat template: train on an instruct checkpoint")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.qlora:
        kwargs.update(_qlora(device))
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if not cfg.qlora:
        model.to(device)
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(cfg.gradient_checkpointing),
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    _check_targets(model, base, cfg.target_modules)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    info = {"name": base.name, "path": folder, "sha256": base_hash(Path(folder)),
            "architecture": (model.config.architectures or [None])[0],
            "dtype": "nf4" if cfg.qlora else str(dtype).removeprefix("torch.")}
    return model, tok, info


def _qlora(device: torch.device) -> dict[str, Any]:
    import importlib.util

    if device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        have = "no CUDA device" if device.type != "cuda" else "bitsandbytes is not installed"
        raise BaseModelError(f"qlora (4-bit) needs CUDA and bitsandbytes; here {have}. "
                             "Train without qlora, or on a GPU machine with `pip install bitsandbytes`.")
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return {"quantization_config": quant, "device_map": {"": device.index or 0}}


def _check_targets(model: Any, base: BaseModel, wanted: list[str]) -> None:
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "weight") and "." in n}
    missing = [t for t in wanted if t not in names]
    if missing:
        arch = (model.config.architectures or ["?"])[0]
        raise BaseModelError(
            f"base {base.name!r} ({arch}) has no {', '.join(missing)} layers: LoRA targets vLLM serves are "
            f"{', '.join(VLLM_TARGETS)} (Llama, Mistral, Qwen2 and Qwen3 checkpoints have them all)")


_HASHES: dict[tuple[str, int, float], str] = {}
FULL_HASH_BYTES = 4 << 30  # above this, config + weight files' names and sizes (reading 16 GB takes minutes)


def base_hash(folder: Path) -> str:
    """sha256 over the base's config and weights (memoised per size and mtime)."""
    files = sorted([folder / "config.json", *folder.glob("*.safetensors"), *folder.glob("*.bin")])
    files = [f for f in files if f.is_file()]
    if not files:
        return hashlib.sha256(str(folder).encode()).hexdigest()  # a hub id: its name
    size = sum(f.stat().st_size for f in files)
    key = (str(folder), size, max(f.stat().st_mtime for f in files))
    if key not in _HASHES:
        h = hashlib.sha256()
        for f in files:
            if size <= FULL_HASH_BYTES or f.name == "config.json":
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            else:
                h.update(f"{f.name}:{f.stat().st_size}".encode())
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
