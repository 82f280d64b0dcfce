"""The base-model catalog: which base a fine-tuning job's ``model`` names, and who serves it.

The gateway YAML's ``base_models:`` maps a served name to its weights::

    base_models:
      qwen-support: /models/Qwen2.5-7B-Instruct              # short form: NAME: PATH
      llama-8b: {path: /models/Llama-3.1-8B-Instruct, targets: [gpu], max_lora_rank: 32,
                 adapters_dir: /adapters}                     # long form

``path`` is what the serving targets were started with (vLLM's ``--model``): a local folder,
or (the command line only) a Hugging Face id the trainer may download. The embedded default,
``smollm2-135m-instruct`` (the engine's SmolLM2 copy), is always in the catalog.

Which targets serve a base: the entry's ``targets`` when given, else those whose ``GET
/v1/models`` lists it as a base model (a card without ``parent`` whose ``id`` is the name or
whose ``root`` is the path: vLLM's ``--served-model-name`` and ``--model``), else, for the
embedded default, the config's ``embedded`` targets. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

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
    return {name: {"base_urls": list(t.base_urls), "embedded": bool(t.embedded)}
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


def weights(base: BaseModel, home: Path | None = None) -> str:
    """What ``from_pretrained`` loads: the folder (or hub id); the embedded default's cache copy."""
    if base.path is not None:
        return base.path
    from adapters.engine.model import default_home, ensure_cached  # torch: the worker only

    return str(ensure_cached(home or default_home()))


def _serves(card: dict[str, Any], base: BaseModel) -> bool:
    if card.get("parent"):
        return False  # an adapter, not a base
    return card.get("id") == base.name or (base.path is not None and card.get("root") == base.path)


def serving_targets(base: BaseModel, timeout_s: float = 3.0) -> list[str]:
    """The targets that serve ``base`` (see the module's docstring), in config order."""
    if base.targets:
        return list(base.targets)
    found = []
    with httpx.Client(timeout=timeout_s) as client:
        for name, target in base.candidates.items():
            for url in target["base_urls"]:
                try:
                    resp = client.get(f"{url}/models")
                    cards = resp.json().get("data", []) if resp.status_code == 200 else []
                except (httpx.HTTPError, ValueError):
                    continue
                if any(_serves(c, base) for c in cards):
                    found.append(name)
                    break
    if not found and base.embedded:
        found = [name for name, t in base.candidates.items() if t.get("embedded")]
    return found
