"""Random-initialised small checkpoints for the training tests, made with ``transformers`` (never
downloaded): ``tests/fixtures/base_models.make_checkpoint`` (the engine tests' builder: 2 layers
of width 64, weights at scale 0.5 so greedy choices are clear-cut) with SmolLM2's own tokenizer
and chat template. Built once per test home (atomic rename: concurrent builders never see half
a folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

VERSION = "v2"


def build(folder: Path, family: str = "qwen2", seed: int = 0) -> Path:
    """A random ``family`` checkpoint at ``folder`` (reused when already there)."""
    if (folder / "config.json").is_file():
        return folder
    from tests.fixtures.base_models import make_checkpoint, smollm2_tokenizer

    template = smollm2_tokenizer().chat_template
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    make_checkpoint(family, tmp, template, seed=seed)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
