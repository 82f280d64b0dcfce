"""The local LoRA trainer: one flat loop (nanoGPT's ``train.py`` shape), SFT or DPO.

    result = train(TrainConfig(method="sft", ...), train_file, out_dir, work_dir, home, hooks)

Reads on top to bottom: load the base model (the engine's, ``load_base_model``), wrap it
with a peft LoRA, tokenize the file, resume from the newest checkpoint in ``work_dir`` if
there is one, then ``while step < total``: a batch, the loss, a step; between steps the
hooks report metrics and may ask to stop (cancel); every ``checkpoint_every`` steps the
adapter, optimizer state and step are saved. At the end the adapter (peft's
``adapter_config.json`` + ``adapter_model.safetensors``, what vLLM and the engine load)
and ``tuneloop.json`` are written to a temporary folder that is renamed to ``out_dir``:
a reader never sees half an adapter.

Batches are a seeded permutation per epoch, so a resumed run sees the same batches an
uninterrupted one would. The learning rate is constant after a short linear warmup
(few steps are typical here; a decay would mostly shrink them). On CUDA the base runs
in bf16 and the LoRA weights stay fp32 (peft's ``autocast_adapter_dtype``).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from adapters.training import data
from adapters.training.dpo import RefCache, dpo_loss, sft_loss

BASE_LR = 2e-4  # OpenAI's learning_rate_multiplier scales this


@dataclass
class TrainConfig:
    method: str = "sft"  # "sft" | "dpo"
    n_epochs: int = 1
    batch_size: int = 8
    learning_rate: float = BASE_LR
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    max_length: int = 512
    beta: float = 0.1
    max_steps: int | None = None  # cap on optimizer steps (None: epochs decide)
    warmup_steps: int = 2
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    device: str | None = None  # None: cuda when present
    threads: int | None = None  # CPU threads; None: TUNELOOP_TRAIN_THREADS or half the cores


class Hooks(Protocol):
    def on_event(self, message: str, data: dict[str, Any] | None = None, level: str = "info") -> None: ...
    def on_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None: ...
    def should_stop(self) -> bool: ...


class Cancelled(Exception):
    """The hooks asked the loop to stop between two steps."""


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    trained_tokens: int
    tokens_per_s: float
    metrics: dict[str, float]


def train(cfg: TrainConfig, train_file: Path, out_dir: Path, work_dir: Path, home: Path | None,
          hooks: Hooks, validation_file: Path | None = None) -> TrainResult:
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or default_threads())
    model, tok, base_info = _load_model(cfg, home, device)
    examples, val = _tokenize(cfg, tok, train_file), _tokenize(cfg, tok, validation_file)
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = per_epoch * cfg.n_epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.n_epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    step = _resume(model, opt, work_dir, hooks)
    hooks.on_event(f"Training {cfg.method} on {len(examples)} examples: {total} steps of {cfg.batch_size}",
                   {"examples": len(examples), "steps": total, "device": str(device)})
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.train()
    seen_tokens, t0, metrics, ref_cache = 0, time.perf_counter(), {}, RefCache()
    bar = tqdm(total=total, initial=step, desc=f"{cfg.method} {out_dir.name}", unit="step", mininterval=1.0)
    while step < total:
        if hooks.should_stop():
            bar.close()
            raise Cancelled(f"cancelled at step {step}")
        batch = _to(_batch(cfg, examples, step, per_epoch, pad), device)
        for group in opt.param_groups:  # linear warmup, then constant
            group["lr"] = cfg.learning_rate * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        loss, extra = _loss(cfg, model, batch, ref_cache)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_v = loss.item()
        seen_tokens += int(batch["attention_mask"].sum())
        tps = seen_tokens / max(time.perf_counter() - t0, 1e-9)
        metrics = {"step": step, "total_steps": total, "train_loss": loss_v, **extra, "tokens_per_s": tps}
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}", tok_s=f"{tps:.0f}")
        if step % cfg.log_every == 0 or step == total:
            hooks.on_metrics(step, metrics)
        if step % cfg.checkpoint_every == 0 and step < total:
            hooks.on_checkpoint(step, _save_checkpoint(model, opt, work_dir, step, metrics, cfg), metrics)
    bar.close()
    elapsed = time.perf_counter() - t0
    if val:
        metrics.update(_validate(cfg, model, val, pad, device))
    trained = _trained_tokens(cfg, examples)
    final = {**metrics, "tokens_per_s": seen_tokens / max(elapsed, 1e-9), "seconds": elapsed}
    meta = {"base_model": base_info, "dataset": {"path": str(train_file), "sha256": data.file_sha256(train_file),
            "examples": len(examples)}, "method": cfg.method, "hyperparameters": asdict(cfg),
            "metrics": final, "trained_tokens": trained, "steps": step}
    _publish(model, out_dir, work_dir, meta)
    return TrainResult(out_dir, step, trained, final["tokens_per_s"], final)


def default_threads() -> int:
    """Half the logical cores (matmuls gain nothing from SMT siblings): on a shared 2-core box,
    two OpenMP threads that lose their cores spin at barriers and run ~5x slower than one."""
    env = os.environ.get("TUNELOOP_TRAIN_THREADS")
    return max(1, int(env)) if env else max(1, (os.cpu_count() or 2) // 2)


def _load_model(cfg: TrainConfig, home: Path | None, device: torch.device) -> tuple[Any, Any, dict[str, Any]]:
    from peft import LoraConfig, get_peft_model

    from adapters.engine.model import BASE_MODEL_NAME, cache_dir, default_home, load_base_model, strip_quantizer

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base, tok = load_base_model(home, dtype=dtype, device=device)
    strip_quantizer(base)
    base.config.use_cache = False
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    folder = cache_dir(home or default_home())
    info = {"name": BASE_MODEL_NAME, "sha256": base_hash(folder), "dtype": str(dtype).removeprefix("torch.")}
    return model, tok, info


_HASHES: dict[tuple[str, int, float], str] = {}


def base_hash(folder: Path) -> str:
    """sha256 over the base model's config and weights (memoised per file size and mtime)."""
    import hashlib

    files = [folder / "config.json", folder / "model.safetensors"]
    key = (str(folder), sum(f.stat().st_size for f in files), max(f.stat().st_mtime for f in files))
    if key not in _HASHES:
        h = hashlib.sha256()
        for f in files:
            h.update(bytes.fromhex(data.file_sha256(f)))
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _tokenize(cfg: TrainConfig, tok: Any, path: Path | None) -> list[Any]:
    if path is None:
        return []
    fmt = "dpo" if cfg.method == "dpo" else "sft"
    rows = data.read_jsonl(path, fmt)
    if fmt == "dpo":
        return [data.dpo_example(tok, r, cfg.max_length) for r in rows]
    return [data.sft_example(tok, r, cfg.max_length) for r in rows]


def _batch(cfg: TrainConfig, examples: list[Any], step: int, per_epoch: int, pad: int) -> dict[str, Any]:
    epoch, i = divmod(step, per_epoch)
    order = list(range(len(examples)))
    random.Random(cfg.seed * 1000 + epoch).shuffle(order)
    chosen = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
    picked = [examples[j] for j in chosen]
    if cfg.method != "dpo":
        return data.pad_sft(picked, pad)
    return {**data.pad_dpo(picked, pad), "index": torch.tensor(chosen)}  # keys of the reference cache


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _loss(cfg: TrainConfig, model: Any, batch: dict[str, torch.Tensor],
          cache: RefCache | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    return dpo_loss(model, batch, cfg.beta, cache) if cfg.method == "dpo" else sft_loss(model, batch)


@torch.no_grad()
def _validate(cfg: TrainConfig, model: Any, val: list[Any], pad: int, device: torch.device) -> dict[str, float]:
    model.eval()
    losses, accs = [], []
    for i in range(0, len(val), cfg.batch_size):
        chunk = val[i:i + cfg.batch_size]
        batch = _to(data.pad_dpo(chunk, pad) if cfg.method == "dpo" else data.pad_sft(chunk, pad), device)
        loss, extra = _loss(cfg, model, batch)
        losses.append(float(loss))
        accs.append(extra.get("train_mean_token_accuracy", extra.get("reward_accuracy", 0.0)))
    model.train()
    return {"valid_loss": sum(losses) / len(losses), "valid_mean_token_accuracy": sum(accs) / len(accs)}


def _trained_tokens(cfg: TrainConfig, examples: list[Any]) -> int:
    """Billable tokens as OpenAI counts them: every token of every example, times epochs."""
    if cfg.method == "dpo":
        per = sum(len(e.prompt) * 2 + len(e.chosen) + len(e.rejected) for e in examples)
    else:
        per = sum(len(e.input_ids) for e in examples)
    return per * cfg.n_epochs


# --- checkpoints: <work_dir>/checkpoints/step-<N>/ {adapter files, optimizer.pt, state.json} ---

def _checkpoints(work_dir: Path) -> list[Path]:
    root = work_dir / "checkpoints"
    found = [p for p in root.glob("step-*") if (p / "state.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def _save_checkpoint(model: Any, opt: torch.optim.Optimizer, work_dir: Path, step: int,
                     metrics: dict[str, float], cfg: TrainConfig) -> Path:
    final = work_dir / "checkpoints" / f"step-{step}"
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))  # a loadable adapter, like OpenAI's checkpoint models
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "metrics": metrics}))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for old in _checkpoints(work_dir)[:-cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _resume(model: Any, opt: torch.optim.Optimizer, work_dir: Path, hooks: Hooks) -> int:
    found = _checkpoints(work_dir)
    if not found:
        return 0
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt = found[-1]
    set_peft_model_state_dict(model, load_file(ckpt / "adapter_model.safetensors"))
    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    step = int(json.loads((ckpt / "state.json").read_text())["step"])
    hooks.on_event(f"Resumed from checkpoint at step {step}", {"step": step, "path": str(ckpt)})
    return step


def _publish(model: Any, out_dir: Path, work_dir: Path, meta: dict[str, Any]) -> None:
    """Write the adapter beside the checkpoints, then rename it into place in one step."""
    tmp = work_dir / "output.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    (tmp / "tuneloop.json").write_text(json.dumps(meta, indent=2, default=str))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    os.rename(tmp, out_dir)
