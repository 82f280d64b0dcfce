"""A local Hugging Face checkpoint folder, read for the engine: config, weights, tokenizer.

``open_checkpoint(path)`` reads ``config.json`` (through ``AutoConfig``, so old
``rope_scaling`` fields are standardised as ``transformers`` does), checks the architecture
(:func:`adapters.models.arch.resolve`), indexes the weights and loads the tokenizer with the
model's own chat template (``tokenizer_config.json``'s ``chat_template`` or
``chat_template.jinja``).  Nothing is downloaded: ``--model`` is a folder.

Weights: ``model.safetensors``, sharded ``model-0000x-of-0000n.safetensors`` with their
``model.safetensors.index.json``, or the same in ``pytorch_model*.bin`` (read with
``weights_only``).  :class:`Weights` hands out one tensor at a time, converted to the engine's
dtype and device, so a bf16 checkpoint never sits in memory twice.  Names are
``model.layers.0.self_attn.q_proj.weight`` and so on; a checkpoint saved without the
``model.`` prefix is read too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapters.models.arch import Arch, ModelError, resolve, supported_text


class Weights:
    """Tensors of a checkpoint by name, read lazily from safetensors or ``.bin`` files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files = _index(folder)
        self._open: dict[str, Any] = {}
        # saved from the inner model (no ``model.`` prefix): read ``model.x`` as ``x``
        self.strip = "model.embed_tokens.weight" not in self.files and "embed_tokens.weight" in self.files

    def __contains__(self, name: str) -> bool:
        return self._key(name) in self.files

    def _key(self, name: str) -> str:
        return name[len("model."):] if self.strip and name.startswith("model.") else name

    def get(self, name: str, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        key = self._key(name)
        file = self.files.get(key)
        if file is None:
            raise ModelError(f"The checkpoint at {self.folder} lacks weight {name}.")
        return self._read(file, key).to(device=device, dtype=dtype)

    def _read(self, file: str, key: str) -> torch.Tensor:
        handle: Any = self._open.get(file)  # a safetensors safe_open, or a .bin's dict of tensors
        if handle is None:
            path = self.folder / file
            if file.endswith(".safetensors"):
                from safetensors import safe_open

                handle = safe_open(str(path), framework="pt", device="cpu")
            else:
                handle = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            self._open[file] = handle
        return handle.get_tensor(key) if file.endswith(".safetensors") else handle[key]

    def close(self) -> None:
        self._open.clear()


def _index(folder: Path) -> dict[str, str]:
    """Weight name -> file name, from the shard index or the files themselves."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            return dict(json.loads((folder / index).read_text())["weight_map"])
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ModelError(f"No weights in {folder}: expected model.safetensors (or shards with their index) "
                         "or pytorch_model.bin.")
    out: dict[str, str] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt", device="cpu") as h:
                out.update(dict.fromkeys(h.keys(), f.name))
        else:
            out.update(dict.fromkeys(torch.load(f, map_location="cpu", weights_only=True, mmap=True), f.name))
    return out


@dataclass
class Checkpoint:
    path: Path
    config: Any  # transformers PretrainedConfig
    arch: Arch
    weights: Weights
    tokenizer: Any  # PreTrainedTokenizerBase


def read_config(path: Path) -> Any:
    """``AutoConfig`` for a local folder; an architecture transformers does not know is refused by name."""
    from transformers import AutoConfig

    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{path} is not a Hugging Face checkpoint folder (no config.json); --model takes a "
                         "local folder (download it first, e.g. with `huggingface-cli download`).")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (ValueError, KeyError, OSError) as exc:
        try:
            archs = json.loads(cfg_file.read_text()).get("architectures") or []
        except (OSError, ValueError):
            archs = []
        raise ModelError(f"Cannot read {cfg_file} ({', '.join(archs) or 'no architectures'}): {exc}. "
                         f"This engine serves {supported_text()}.") from exc


def open_checkpoint(path: Path | str) -> Checkpoint:
    """Read and check a checkpoint folder (weights stay on disk until :meth:`Weights.get`)."""
    from transformers import AutoTokenizer

    path = Path(path).expanduser().resolve()
    config = read_config(path)
    arch = resolve(config)
    weights = Weights(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot load the tokenizer in {path}: {exc}") from exc
    if len(tokenizer) > int(config.vocab_size):
        raise ModelError(f"The tokenizer in {path} has {len(tokenizer)} tokens, more than the model's "
                         f"vocab_size {config.vocab_size}.")
    return Checkpoint(path=path, config=config, arch=arch, weights=weights, tokenizer=tokenizer)
