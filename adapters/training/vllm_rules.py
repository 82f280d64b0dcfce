"""Will vLLM load this adapter? The rules its LoRA loader applies, checked on the folder.

``check_vllm(adapter_dir, max_lora_rank)`` returns the broken rules (empty: loadable);
``vllm_compatible`` says yes or no. The trainer checks every adapter it publishes; the tests
check what the trainer writes. Rules, and where vLLM states them:

* ``peft_type`` is ``LORA``, with ``r``, ``lora_alpha`` and ``target_modules``
  (``vllm/lora/peft_helper.py``: ``PEFTHelper``'s required fields; the filesystem resolver,
  ``vllm/plugins/lora_resolvers/filesystem_resolver.py``, also wants ``peft_type == "LORA"``).
* ``r`` <= the engine's ``--max-lora-rank`` (16 unless set), ``bias == "none"`` (vLLM's
  ``bias_enabled`` is off by default), no ``modules_to_save``, no DoRA
  (``PEFTHelper.validate_legal`` and ``_validate_features``).
* Every tensor is ``base_model.model.<module>.lora_A.weight`` or ``.lora_B.weight`` of a module
  vLLM's model supports for LoRA (``vllm/lora/models.py``: ``from_local_checkpoint`` rejects
  "unexpected modules"; ``vllm/lora/utils.py``: ``parse_fine_tuned_lora_name`` refuses
  anything else, biases and ``lora_embedding_*`` included). For the Llama, Mistral and Qwen
  families that is ``q/k/v/o_proj`` and ``gate/up/down_proj`` (packed by vLLM into
  ``qkv_proj`` and ``gate_up_proj``); embeddings and ``lm_head`` are not trained here.
* For vLLM's filesystem resolver (``VLLM_LORA_RESOLVER_CACHE_DIR``) the folder's name is the
  adapter's name and ``base_model_name_or_path`` must equal the engine's ``--model`` string;
  the trainer writes the base's path there (peft's default), so :func:`check_vllm` takes the
  expected value as ``base_model`` when the caller knows it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.hyperparameters import VLLM_TARGETS  # one list: the gateway checks target_modules against it

DEFAULT_MAX_LORA_RANK = 16
_TENSOR = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_[AB]\.weight")


def check_vllm(adapter_dir: Path | str, max_lora_rank: int = DEFAULT_MAX_LORA_RANK,
               base_model: str | None = None) -> list[str]:
    folder = Path(adapter_dir)
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"adapter_config.json is missing or unreadable: {exc}"]
    problems = _config_problems(cfg, max_lora_rank)
    if base_model is not None and cfg.get("base_model_name_or_path") != base_model:
        problems.append(f"base_model_name_or_path is {cfg.get('base_model_name_or_path')!r}, not {base_model!r}")
    return problems + _tensor_problems(folder)


def vllm_compatible(adapter_dir: Path | str, max_lora_rank: int = DEFAULT_MAX_LORA_RANK) -> bool:
    return not check_vllm(adapter_dir, max_lora_rank)


def _config_problems(cfg: dict, max_lora_rank: int) -> list[str]:
    problems = []
    if cfg.get("peft_type") != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}, not 'LORA'")
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in cfg]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    r = cfg.get("r")
    if not isinstance(r, int) or r < 1 or r > max_lora_rank:
        problems.append(f"rank r={r!r} is not within 1..{max_lora_rank} (the engine's --max-lora-rank)")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias is {cfg.get('bias')!r}: vLLM loads only bias 'none' (bias_enabled is off)")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save is {cfg['modules_to_save']!r}: vLLM supports only None")
    if cfg.get("use_dora"):
        problems.append("DoRA: vLLM does not support it")
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    bad = [t for t in targets if t.rsplit(".", 1)[-1] not in VLLM_TARGETS]
    if bad:
        problems.append(f"target_modules {bad} are not among {', '.join(VLLM_TARGETS)}")
    return problems


def _tensor_problems(folder: Path) -> list[str]:
    from safetensors import safe_open

    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        return ["adapter_model.safetensors is missing"]
    with safe_open(str(file), framework="np") as f:
        keys = list(f.keys())
    if not keys:
        return ["adapter_model.safetensors holds no tensors"]
    bad = []
    for key in keys:
        m = _TENSOR.fullmatch(key)
        if m is None or m["module"].rsplit(".", 1)[-1] not in VLLM_TARGETS:
            bad.append(key)
    return [f"tensors vLLM would refuse: {bad[:5]}{' ...' if len(bad) > 5 else ''}"] if bad else []
