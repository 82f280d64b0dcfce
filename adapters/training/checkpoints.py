"""Checkpoints and the published adapter: ``<work_dir>/checkpoints/step-<N>/`` and ``out_dir``.

A checkpoint is a loadable adapter (like OpenAI's checkpoint models) plus ``optimizer.pt``
and ``state.json`` (the step and its metrics); the newest ``keep`` are kept. Resuming reads
the newest one on rank 0 and hands it to every rank, so ranks on machines that do not
share ``work_dir`` resume from the same state. Publishing writes the adapter beside the
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


def save(model: Any, opt: torch.optim.Optimizer, work_dir: Path, step: int, metrics: dict[str, float],
         keep: int) -> Path:
    final = work_dir / "checkpoints" / f"step-{step}"
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "metrics": metrics}))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for old in _found(work_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resume(model: Any, opt: torch.optim.Optimizer, work_dir: Path, ctx: Ctx) -> tuple[int, Path | None]:
    """Load the newest checkpoint into ``model`` and ``opt``; returns (its step, its folder) or (0, None)."""
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
        return 0, None
    set_peft_model_state_dict(model, {k: v.to(ctx.device) for k, v in state["adapter"].items()})
    opt.load_state_dict(state["optimizer"])
    return state["step"], Path(state["path"])


def staging(out_dir: Path) -> Path:
    """Where the adapter is written before its rename: beside ``out_dir`` (one filesystem)."""
    return out_dir.parent / f".{out_dir.name}.tmp"


def publish(model: Any, out_dir: Path, meta: dict[str, Any]) -> None:
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    tmp = staging(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(str(tmp))
        (tmp / "tuneloop.json").write_text(json.dumps(meta, indent=2, default=str))
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
