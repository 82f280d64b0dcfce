"""The base-model catalog: which base a fine-tuning job's ``model`` names.

The gateway YAML's ``base_models:`` maps a served name to its weights::

    base_models:
      qwen-support: /models/Qwen2.5-7B-Instruct              # short form: NAME: PATH
      llama-8b: {path: /models/Llama-3.1-8B-Instruct, targets: [gpu], max_lora_rank: 32,
                 adapters_dir: /adapters}                     # long form

``path`` is what the serving targets were started with (vLLM's ``--model``): a local folder,
or (the command line only) a Hugging Face id the trainer may download. The embedded default,
``smollm2-135m-instruct`` (the engine's SmolLM2 copy), is always in the catalog.

The gateway checks a job's ``model`` against this catalog when the job is created; the
training side (``adapters.training``) imports it from here, adding what needs the weights
(``adapters.training.base.weights``) or the engines (``adapters.training.publish.serving_targets``:
which targets serve a base). Pure data: no torch, no HTTP.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EMBEDDED = "smollm2-135m-instruct"  # adapters.engine.model.BASE_MODEL_NAME, without importing torch
DEFAULT_MAX_LORA_RANK = 16  # vLLM's default --max-lora-rank


@dataclass(frozen=True)
class BaseModel:
    name: str
    path: str | None  # None: the embedded default (the engine's dequantized SmolLM2 copy)
    targets: tuple[str, ...] = ()
    max_lora_rank: int = DEFAULT_MAX_LORA_RANK
    adapters_dir: str | None = None
    # vLLM targets of the config the job was created with: name -> {"base_urls", "embedded"}
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    @property
    def embedded(self) -> bool:
        return self.path is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaseModel:
        return cls(d["name"], d.get("path"), tuple(d.get("targets") or ()),
                   int(d.get("max_lora_rank") or DEFAULT_MAX_LORA_RANK), d.get("adapters_dir"),
                   dict(d.get("candidates") or {}))


def _candidates(config: Any) -> dict[str, dict[str, Any]]:
    if config is None:
        return {}
    return {name: {"base_urls": list(t.base_urls), "embedded": bool(t.embedded), "api_key_env": t.api_key_env}
            for name, t in config.targets.items() if t.kind == "vllm"}


def catalog(config: Any = None) -> dict[str, BaseModel]:
    """Every base a job may name: the embedded default, then the config's ``base_models``."""
    found = {EMBEDDED: BaseModel(EMBEDDED, None, candidates=_candidates(config))}
    for name, entry in (getattr(config, "base_models", None) or {}).items():
        found[name] = BaseModel(name, entry.path, tuple(entry.targets), entry.max_lora_rank,
                                entry.adapters_dir, _candidates(config))
    return found


def lookup(model: str, config: Any = None, allow_paths: bool = False) -> BaseModel | None:
    """The base ``model`` names, or None (then it is an OpenAI model).

    ``allow_paths`` (the command line, never the HTTP API): a local checkpoint folder, or a
    catalog entry's path, names that base too."""
    known = catalog(config)
    if model in known:
        return known[model]
    if not allow_paths:
        return None
    for base in known.values():
        if base.path is not None and base.path == model:
            return base
    if (Path(model) / "config.json").is_file() or re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        return BaseModel(short_name(model), model, candidates=_candidates(config))
    return None


def short_name(path: str) -> str:
    """A folder's (or hub id's) last part as an adapter name prefix: ``Qwen2.5-7B`` -> ``qwen2-5-7b``."""
    return re.sub(r"[^a-z0-9-]+", "-", Path(path.rstrip("/")).name.lower()).strip("-") or "base"
