"""Checkpoints and the published adapter: ``<work_dir>/checkpoints/step-<N>/`` and ``out_dir``.

A checkpoint is a loadable adapter (like OpenAI's checkpoint models) plus ``optimizer.pt``
and ``state.json`` (the step and its metrics); the newest ``keep`` are kept. Resuming reads
the newest one on rank 0 and hands it to every rank, so ranks on machines that do not
share ``work_dir`` resume from the same state. Under FSDP every rank takes part in a save
(each weight and its optimizer state are gathered from the shards) and rank 0 writes; the
optimizer state is always stored in torch's own format (by parameter index), so a run may
resume under another strategy or world size. Publishing writes the adapter beside the
``out_dir`` (same filesystem) and renames it into place in one step: a reader never sees half an
adapter.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from adapters.training.dist import Ctx


def _found(work_dir: Path) -> list[Path]:
    root = work_dir / "checkpoints"
    found = [p for p in root.glob("step-*") if (p / "state.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def save(ctx: Ctx, model: Any, opt: torch.optim.Optimizer, work_dir: Path, step: int,
         metrics: dict[str, float], keep: int) -> Path:
    """Every rank calls it; rank 0 writes the folder (returned on every rank)."""
    final = work_dir / "checkpoints" / f"step-{step}"
    lora = ctx.lora_state(model) if ctx.sharded else None
    optim = _full_optimizer_state(ctx, model, opt)
    if not ctx.main:
        return final
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), state_dict=lora)
    torch.save(optim, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "metrics": metrics}))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for old in _found(work_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resume(model: Any, work_dir: Path, ctx: Ctx) -> tuple[int, Path | None, dict[str, Any] | None]:
    """Load the newest checkpoint's adapter into ``model`` (before ``ctx.wrap``); returns (its step,
    its folder, its optimizer state for :func:`load_optimizer`) or (0, None, None)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = None
    if ctx.main:
        found = _found(work_dir)
        if found:
            ckpt = found[-1]
            state = {"path": str(ckpt), "adapter": load_file(ckpt / "adapter_model.safetensors"),
                     "optimizer": torch.load(ckpt / "optimizer.pt", weights_only=True),
                     "step": int(json.loads((ckpt / "state.json").read_text())["step"])}
    state = ctx.broadcast(state)
    if state is None:
        return 0, None, None
    set_peft_model_state_dict(model, {k: v.to(ctx.device) for k, v in state["adapter"].items()})
    return state["step"], Path(state["path"]), state["optimizer"]


def load_optimizer(ctx: Ctx, model: Any, opt: torch.optim.Optimizer, state: dict[str, Any] | None) -> None:
    """A checkpoint's optimizer state into ``opt`` (built after ``ctx.wrap``; sharded: each rank its part)."""
    if state is None:
        return
    if not ctx.sharded:
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _trainable_names(model)
    by_name: dict[str, Any] = {"state": {names[i]: v for i, v in state["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, opt, by_name, options=StateDictOptions(full_state_dict=True))


def _full_optimizer_state(ctx: Ctx, model: Any, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """torch's own format (parameter indices); sharded, gathered from every rank's shard onto rank 0."""
    if not ctx.sharded:
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full: dict[str, Any] = dict(get_optimizer_state_dict(
        model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
    if not ctx.main:  # gathered on rank 0 only
        return {}
    index = {name: i for i, name in enumerate(_trainable_names(model))}
    return {"state": {index[k]: v for k, v in full["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]}


def _trainable_names(model: Any) -> list[str]:
    """The optimizer's parameters in order (it is built over exactly these)."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def staging(out_dir: Path) -> Path:
    """Where the adapter is written before its rename: beside ``out_dir`` (one filesystem)."""
    return out_dir.parent / f".{out_dir.name}.tmp"


def publish(model: Any, out_dir: Path, meta: dict[str, Any], lora: dict[str, torch.Tensor] | None = None) -> None:
    """Rank 0 only; ``lora``: the weights gathered by ``ctx.lora_state`` when they are sharded."""
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    tmp = staging(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(str(tmp), state_dict=lora)
        (tmp / "tuneloop.json").write_text(json.dumps(meta, indent=2, default=str))
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
