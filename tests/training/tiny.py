"""Random-initialised small checkpoints of the supported families, made with ``transformers``
(never downloaded): the SmolLM2 tokenizer and chat template from the engine's model cache,
a config of the family shrunk to 2 layers of width 64, ``save_pretrained`` into a folder.
Built once per test home (atomic rename: concurrent builders never see half a folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

SHAPES = {
    "qwen2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2},
    "llama": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2},
    "qwen3": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16},
    "mistral": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2},
}
VERSION = "v1"


def build(folder: Path, family: str = "qwen2", seed: int = 0, home: Path | None = None, **shape: int) -> Path:
    """A random ``family`` checkpoint at ``folder`` (reused when already there)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from adapters.engine.model import ensure_cached

    tok = AutoTokenizer.from_pretrained(ensure_cached(home))
    cfg = AutoConfig.for_model(family, **{**SHAPES[family], **shape}, vocab_size=len(tok),
                               max_position_embeddings=1024, tie_word_embeddings=True,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
