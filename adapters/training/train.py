"""The local LoRA trainer: one flat loop (nanoGPT's ``train.py`` shape), SFT or DPO, on any base.

    result = train(TrainConfig(method="sft", ...), train_file, out_dir, work_dir, home, hooks, base=base)

Reads on top to bottom: join the ``torchrun`` group if there is one (``dist``), fill the
"auto" hyperparameters by the base's size (``base.size_defaults``), load the base (any
local Hugging Face checkpoint from the catalog, or the embedded SmolLM2) with a peft LoRA
(``base.load``), tokenize the file with the base's chat template, resume from the newest
checkpoint in ``work_dir`` if there is one, then ``while step < total``: the global batch's
gradients (``steps.accumulate``: ranks and micro-batches), clip, a step; between steps the
hooks report metrics and may ask to stop (cancel); every ``checkpoint_every`` steps the
adapter, optimizer state and step are saved. At the end rank 0 writes the adapter (peft's
``adapter_config.json`` + ``adapter_model.safetensors``, what vLLM and the engine load) and
``tuneloop.json`` into ``out_dir`` in one rename, and checks it against vLLM's loader rules
(``vllm_rules``): an adapter vLLM would refuse fails the run.

Batches are a seeded permutation per epoch, so a resumed run sees the same batches an
uninterrupted one would, and N ranks see the same global batches one process would. The
learning rate is constant after a short linear warmup (few steps are typical here; a decay
would mostly shrink them). On CUDA the base runs in bf16 and the LoRA weights stay fp32.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from adapters.training import base as bases
from adapters.training import checkpoints, data, dist
from adapters.training.dpo import RefCache
from adapters.training.steps import accumulate, evaluate
from adapters.training.vllm_rules import check_vllm
from gateway.catalog import EMBEDDED, BaseModel, catalog

BASE_LR = 2e-4  # the auto learning rate of small bases; OpenAI's learning_rate_multiplier scales it


@dataclass
class TrainConfig:
    method: str = "sft"  # "sft" | "dpo"
    n_epochs: int = 1
    # None: chosen by the base's size (base.size_defaults)
    batch_size: int | None = None  # the global batch (all ranks, all micro-batches)
    learning_rate: float | None = None
    learning_rate_multiplier: float = 1.0  # scales the auto learning rate
    lora_r: int | None = None
    lora_alpha: int | None = None
    target_modules: list[str] | None = None
    micro_batch_size: int | None = None  # examples per forward pass on one rank
    gradient_checkpointing: bool | None = None
    qlora: bool = False  # 4-bit base (CUDA + bitsandbytes)
    max_length: int = 512
    beta: float = 0.1
    max_steps: int | None = None  # cap on optimizer steps (None: epochs decide)
    warmup_steps: int = 2
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    device: str | None = None  # None/"auto": cuda when present
    threads: int | None = None  # CPU threads; None: TUNELOOP_TRAIN_THREADS or half the cores
    strategy: str = "ddp"  # across torchrun ranks: "ddp" (a whole base per rank) | "fsdp" (sharded)


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


def resolve(cfg: TrainConfig, n_params: float, device_type: str, max_lora_rank: int) -> TrainConfig:
    """``cfg`` with its "auto" (None) fields chosen by size; an explicit rank above the
    serving engine's ``--max-lora-rank`` is refused (vLLM would not load the adapter)."""
    auto = bases.size_defaults(n_params, device_type)
    if cfg.lora_r is not None and cfg.lora_r > max_lora_rank:
        raise bases.BaseModelError(f"lora_r {cfg.lora_r} is above the serving engine's max_lora_rank {max_lora_rank}")
    r = cfg.lora_r or min(auto["lora_r"], max_lora_rank)
    lr = cfg.learning_rate if cfg.learning_rate is not None else auto["learning_rate"] * cfg.learning_rate_multiplier
    batch = cfg.batch_size or auto["batch_size"]
    gc = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else auto["gradient_checkpointing"]
    return replace(cfg, lora_r=r, lora_alpha=cfg.lora_alpha or 2 * r, learning_rate=lr, batch_size=batch,
                   micro_batch_size=cfg.micro_batch_size or min(batch, auto["micro_batch_size"]),
                   target_modules=list(cfg.target_modules or auto["target_modules"]), gradient_checkpointing=gc)


def resolved(cfg: TrainConfig) -> tuple[int, float]:
    """The global batch and learning rate, which :func:`resolve` always fills."""
    assert cfg.batch_size is not None and cfg.learning_rate is not None, "resolve() the config first"
    return cfg.batch_size, cfg.learning_rate


def train(cfg: TrainConfig, train_file: Path, out_dir: Path, work_dir: Path, home: Path | None,
          hooks: Hooks, validation_file: Path | None = None, base: BaseModel | None = None) -> TrainResult:
    base = base or catalog()[EMBEDDED]
    ctx = dist.setup(cfg.device, cfg.strategy)
    torch.manual_seed(cfg.seed)
    if ctx.device.type == "cpu":
        torch.set_num_threads(cfg.threads or default_threads())
    cfg = resolve(cfg, bases.count_params(bases.weights(base, home)), ctx.device.type, base.max_lora_rank)
    model, tok, base_info = bases.load(base, cfg, ctx.device, home)
    examples, val = _tokenize(cfg, tok, train_file), _tokenize(cfg, tok, validation_file)
    batch, lr = resolved(cfg)
    per_epoch = math.ceil(len(examples) / batch)
    total = per_epoch * cfg.n_epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.n_epochs)
    step, resumed, opt_state = checkpoints.resume(model, work_dir, ctx)
    wrapped = ctx.wrap(model)  # FSDP replaces the weights with shards: the optimizer comes after
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    checkpoints.load_optimizer(ctx, model, opt, opt_state)
    main = hooks if ctx.main else None
    if main and resumed:
        main.on_event(f"Resumed from checkpoint at step {step}", {"step": step, "path": str(resumed)})
    if main:
        main.on_event(f"Training {cfg.method} on {len(examples)} examples: {total} steps of {cfg.batch_size}",
                      {"examples": len(examples), "steps": total, "device": str(ctx.device), "ranks": ctx.world,
                       "strategy": ctx.strategy, "base": base.name, "lora_r": cfg.lora_r,
                       "learning_rate": cfg.learning_rate})
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.train()
    # sharded, a reference pass is a collective: every rank runs it, never only the ranks that miss the cache
    seen_tokens, t0, metrics, ref_cache = 0, time.perf_counter(), {}, RefCache(enabled=not ctx.sharded)
    bar = tqdm(total=total, initial=step, desc=f"{cfg.method} {out_dir.name}", unit="step", mininterval=1.0,
               disable=not ctx.main)
    while step < total:
        if ctx.broadcast(bool(main and main.should_stop())):
            bar.close()
            raise Cancelled(f"cancelled at step {step}")
        for group in opt.param_groups:  # linear warmup, then constant
            group["lr"] = lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        rows = _rows(cfg, len(examples), step, per_epoch)
        step_metrics, tokens = accumulate(cfg, ctx, wrapped, model, examples, rows, pad, ref_cache)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        seen_tokens += tokens
        tps = seen_tokens / max(time.perf_counter() - t0, 1e-9)
        metrics = {"step": step, "total_steps": total, **step_metrics, "tokens_per_s": tps}
        bar.update(1)
        bar.set_postfix(loss=f"{step_metrics['train_loss']:.4f}", tok_s=f"{tps:.0f}")
        if main and (step % cfg.log_every == 0 or step == total):
            main.on_metrics(step, metrics)
        if step % cfg.checkpoint_every == 0 and step < total:
            saved = checkpoints.save(ctx, model, opt, work_dir, step, metrics, cfg.keep_checkpoints)
            if main:
                main.on_checkpoint(step, saved, metrics)
    bar.close()
    elapsed = time.perf_counter() - t0
    if val and (ctx.main or ctx.sharded):  # sharded, every rank takes part in each forward
        metrics.update(evaluate(cfg, model, val, pad, ctx.device))
    trained = _trained_tokens(cfg, examples)
    final = {**metrics, "tokens_per_s": seen_tokens / max(elapsed, 1e-9), "seconds": elapsed}
    lora = ctx.lora_state(model) if ctx.sharded else None
    if ctx.main:
        meta = {"base_model": base_info, "dataset": {"path": str(train_file), "sha256": data.file_sha256(train_file),
                "examples": len(examples)}, "method": cfg.method, "hyperparameters": asdict(cfg),
                "ranks": ctx.world, "strategy": ctx.strategy, "metrics": final, "trained_tokens": trained,
                "steps": step}
        checkpoints.publish(model, out_dir, meta, lora)
        _check_loadable(out_dir, base, base_info)
    ctx.barrier()
    return TrainResult(out_dir, step, trained, final["tokens_per_s"], final)


def default_threads() -> int:
    """Half the logical cores (matmuls gain nothing from SMT siblings): on a shared 2-core box,
    two OpenMP threads that lose their cores spin at barriers and run ~5x slower than one."""
    env = os.environ.get("TUNELOOP_TRAIN_THREADS")
    return max(1, int(env)) if env else max(1, (os.cpu_count() or 2) // 2)


def _check_loadable(out_dir: Path, base: BaseModel, info: dict[str, Any]) -> None:
    problems = check_vllm(out_dir, base.max_lora_rank, base_model=info["path"])
    if problems:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise bases.BaseModelError(f"the adapter would not load in vLLM: {'; '.join(problems)}")


def _tokenize(cfg: TrainConfig, tok: Any, path: Path | None) -> list[Any]:
    if path is None:
        return []
    fmt = "dpo" if cfg.method == "dpo" else "sft"
    rows = data.read_jsonl(path, fmt)
    if fmt == "dpo":
        return [data.dpo_example(tok, r, cfg.max_length) for r in rows]
    return [data.sft_example(tok, r, cfg.max_length) for r in rows]


def _rows(cfg: TrainConfig, n: int, step: int, per_epoch: int) -> list[int]:
    """The global batch of ``step``: a slice of the epoch's seeded permutation."""
    epoch, i = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(cfg.seed * 1000 + epoch).shuffle(order)
    batch = resolved(cfg)[0]
    return order[i * batch:(i + 1) * batch]


def _trained_tokens(cfg: TrainConfig, examples: list[Any]) -> int:
    """Billable tokens as OpenAI counts them: every token of every example, times epochs."""
    if cfg.method == "dpo":
        per = sum(len(e.prompt) * 2 + len(e.chosen) + len(e.rejected) for e in examples)
    else:
        per = sum(len(e.input_ids) for e in examples)
    return per * cfg.n_epochs
