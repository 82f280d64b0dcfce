"""Sampling defaults from the model's ``generation_config.json``, as vLLM's ``--generation-config`` reads it.

vLLM (``ModelConfig.get_diff_sampling_param``): with ``auto`` (the default) the model's
``generation_config.json`` supplies ``repetition_penalty``, ``temperature``, ``top_k``,
``top_p``, ``min_p`` and ``max_new_tokens`` (as ``max_tokens``) for the fields a request
leaves out; with ``vllm`` none of them; with a folder, that folder's
``generation_config.json``.  Fields the file lacks keep vLLM's neutral values (temperature 1,
top_p 1, no top_k / min_p, no repetition penalty).  ``max_new_tokens`` caps every request's
``max_tokens``, as vLLM's ``get_max_tokens`` takes the minimum.  The file's ``eos_token_id``
(one id or a list) stops generation in every mode, as vLLM's
``SamplingParams.update_from_generation_config`` does.

The embedded SmolLM2 default keeps the engine's own defaults (``protocol.DEFAULT_TEMPERATURE``
/ ``DEFAULT_TOP_P``): :data:`EMBEDDED` changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.models.arch import ModelError

FIELDS = ("repetition_penalty", "temperature", "top_k", "top_p", "min_p")
NEUTRAL: dict[str, Any] = {"repetition_penalty": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}


@dataclass(frozen=True)
class GenerationDefaults:
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingParams field -> value when left out
    max_tokens: int | None = None
    eos_ids: frozenset[int] = frozenset()
    source: str = "engine"

    def apply(self, request: Any, params: Any) -> Any:
        """Fill the ``params`` fields that ``request`` left out (``None``) and cap ``max_tokens``."""
        for name, value in self.sampling.items():
            if getattr(request, name, None) is None:
                setattr(params, name, value)
        if self.max_tokens is not None:
            params.max_tokens = min(params.max_tokens, self.max_tokens)
        return params


EMBEDDED = GenerationDefaults()


def _read(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"Invalid {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"Invalid {file}: not a JSON object.")
    return data


def _eos(data: dict[str, Any]) -> frozenset[int]:
    eos = data.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos]
    return frozenset(int(i) for i in ids if i is not None)


def load_generation_defaults(model_path: Path, mode: str = "auto") -> GenerationDefaults:
    """Defaults for ``--generation-config auto|vllm|FOLDER`` of the checkpoint at ``model_path``."""
    own = _read(Path(model_path) / "generation_config.json")
    if mode == "vllm":
        return GenerationDefaults(sampling=dict(NEUTRAL), eos_ids=_eos(own), source="vllm")
    if mode == "auto":
        data, source = own, str(Path(model_path) / "generation_config.json")
    else:
        folder = Path(mode).expanduser()
        file = folder if folder.name.endswith(".json") else folder / "generation_config.json"
        if not file.is_file():
            raise ModelError(f"--generation-config {mode}: no generation_config.json there "
                             "(give auto, vllm or a folder holding one).")
        data, source = _read(file), str(file)
    sampling = dict(NEUTRAL)
    sampling.update({k: data[k] for k in FIELDS if data.get(k) is not None})
    if sampling["top_k"] is not None and int(sampling["top_k"]) < 0:
        sampling["top_k"] = 0
    max_new = data.get("max_new_tokens")
    return GenerationDefaults(sampling=sampling, max_tokens=int(max_new) if max_new else None,
                              eos_ids=_eos(data) or _eos(own), source=source)
