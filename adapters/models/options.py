"""``tuneloop engine``'s base-model options, with vLLM's flag names and meanings.

``--model PATH`` (a local Hugging Face checkpoint folder; without it the embedded SmolLM2),
``--served-model-name NAME`` (default: the ``--model`` string, as vLLM), ``--chat-template
FILE`` (or the template itself; needed when the checkpoint has none), ``--generation-config
auto|vllm|FOLDER``, ``--max-model-len N``, ``--enable-lora`` (on by default only for the
embedded model, whose gateway loads adapters at run time), ``--max-lora-rank R`` (vLLM's
default 16) and ``--lora-modules``: ``name=path`` or vLLM's JSON form
``{"name": ..., "path": ..., "base_model_name": ...}``, repeated or, as vLLM's ``nargs='+'``,
several after one flag (``--lora-modules a=/x b=/y``).

A checkpoint or adapter the engine cannot serve stops the command at start with the reason
(exit status 2), never a half-started server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

LoraModule = tuple[str, Path, str | None]


class OptionError(ValueError):
    """A flag's value is malformed."""


def parse_lora_module(item: str) -> LoraModule:
    """vLLM's ``LoRAParserAction``: ``name=path`` or a JSON object with name, path, base_model_name."""
    if "=" in item and "," not in item and not item.lstrip().startswith("{"):
        name, _, path = item.partition("=")
        if not name or not path:
            raise OptionError(f"Invalid --lora-modules entry {item!r}: expected name=path.")
        return name, Path(path).expanduser(), None
    try:
        spec = json.loads(item)
    except ValueError as exc:
        raise OptionError(f"Invalid JSON format for --lora-modules: {item}") from exc
    if not isinstance(spec, dict) or set(spec) - {"name", "path", "base_model_name"} or not (
            spec.get("name") and spec.get("path")):
        raise OptionError(f"Invalid fields for --lora-modules: {item} (expected name, path, base_model_name).")
    return str(spec["name"]), Path(str(spec["path"])).expanduser(), spec.get("base_model_name")


def model_options(model: str | None, served_model_name: str | None, generation_config: str | None,
                  max_model_len: int | None, enable_lora: bool | None, max_lora_rank: int,
                  lora_modules: list[str] | None, extra: list[str], chat_template: str | None = None
                  ) -> dict[str, Any]:
    """The :class:`~adapters.engine.engine.Engine` keywords for these flags.

    ``extra`` are the command line's leftover arguments: further ``--lora-modules`` entries in
    vLLM's space-separated form; anything else is an error.
    """
    entries = list(lora_modules or [])
    stray = [a for a in extra if a.startswith("-") or not lora_modules or ("=" not in a and "{" not in a)]
    if stray:
        raise OptionError(f"Unexpected arguments: {' '.join(stray)}")
    entries += extra
    if max_lora_rank < 1:
        raise OptionError("--max-lora-rank must be at least 1.")
    return {"model": model, "served_model_name": served_model_name, "generation_config": generation_config,
            "max_model_len": max_model_len, "enable_lora": enable_lora, "max_lora_rank": max_lora_rank,
            "lora_modules": [parse_lora_module(e) for e in entries], "chat_template": chat_template}


def precheck(model: str | None) -> None:
    """Refuse a ``--model`` folder whose config.json names no supported architecture, before torch loads
    (the full checks run when the engine opens the checkpoint)."""
    if model is None:
        return
    from adapters.models.arch import SUPPORTED, unsupported  # no torch there

    cfg = Path(model).expanduser() / "config.json"
    try:
        archs = json.loads(cfg.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return  # missing or unreadable: the engine's own error says which
    if not any(a in SUPPORTED for a in archs):
        _refuse(unsupported(archs or ["(none in config.json)"]))


def with_model(run: Callable[..., None], extra: list[str], **flags: Any) -> Callable[..., None]:
    """``run`` (``run_engine``) with the base-model options added; a refusal exits with status 2 and its reason."""
    from adapters.engine.lora import AdapterError
    from adapters.models.arch import ModelError

    try:
        options = model_options(extra=extra, **flags)
    except OptionError as exc:
        _refuse(exc)

    def runner(**kwargs: Any) -> None:
        try:
            run(**kwargs, **options)
        except (ModelError, AdapterError) as exc:
            _refuse(exc)

    return runner


def _refuse(exc: Exception | str) -> None:
    sys.stderr.write(f"Error: {exc}\n")
    raise SystemExit(2)
