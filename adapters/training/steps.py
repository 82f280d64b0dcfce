"""One optimizer step's forward and backward passes: the global batch, split over ranks and micro-batches.

    metrics, tokens = accumulate(cfg, ctx, wrapped, model, examples, rows, pad, cache)

``rows`` are the global batch's example indices (the same on every rank). This rank takes
``rows[rank::world]`` and runs them ``micro_batch_size`` at a time, each pass's gradient
added to the last (DDP and FSDP reduce only after the last one: ``no_sync`` before). Each
loss *sum* is scaled by ``world / N``, N the global count of labelled tokens (pairs for
DPO), so the summed, then rank-averaged, gradient is the gradient of the global batch's
mean loss: what one process with one pass over the whole batch computes. A rank with no
row (a batch smaller than the world) runs one pass with weight 0 so the all-reduce still
meets every rank. Metrics are global means too (one all-reduce of their sums).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from adapters.training import data
from adapters.training.dist import Ctx
from adapters.training.dpo import RefCache, count, dpo_loss, sft_loss

METRICS = {"sft": ("train_loss", "train_mean_token_accuracy"),
           "dpo": ("train_loss", "reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward")}


def collate(cfg: Any, examples: list[Any], rows: list[int], pad: int, device: torch.device) -> dict[str, Any]:
    picked = [examples[j] for j in rows]
    if cfg.method == "dpo":  # the indices key the reference cache
        batch = {**data.pad_dpo(picked, pad), "index": torch.tensor(rows)}
    else:
        batch = data.pad_sft(picked, pad)
    return {k: v.to(device) for k, v in batch.items()}


def loss_of(cfg: Any, model: Any, batch: dict[str, Any], cache: RefCache | None = None,
            reference: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
    if cfg.method == "dpo":
        return dpo_loss(model, batch, cfg.beta, cache, reference)
    return sft_loss(model, batch)


def accumulate(cfg: Any, ctx: Ctx, wrapped: Any, model: Any, examples: list[Any], rows: list[int], pad: int,
               cache: RefCache) -> tuple[dict[str, float], int]:
    """Gradients of the global batch ``rows`` into ``model``'s LoRA weights; (mean metrics, tokens seen)."""
    mine, weight = ctx.shard(rows), 1.0
    if not mine:
        mine, weight = rows[:1], 0.0
    size = max(1, int(cfg.micro_batch_size or len(mine)))
    batches = [collate(cfg, examples, mine[i:i + size], pad, ctx.device) for i in range(0, len(mine), size)]
    local_n = sum(count(b, cfg.method) for b in batches) if weight else 0
    total_n = max(ctx.sum(local_n), 1.0)
    scale = weight * ctx.world / total_n
    sums = dict.fromkeys(METRICS[cfg.method], 0.0)
    sums["tokens"] = 0.0
    for k, batch in enumerate(batches):
        last = k == len(batches) - 1
        with nullcontext() if last else ctx.no_sync(wrapped):
            loss, extra = loss_of(cfg, wrapped, batch, cache, model)
            (loss * scale).backward()
        if weight:
            sums["train_loss"] += float(loss.detach())
            for key, value in extra.items():
                sums[key] += value
            sums["tokens"] += float(batch["attention_mask"].sum())
    total = ctx.sums(sums)
    return {k: total[k] / total_n for k in METRICS[cfg.method]}, int(total["tokens"])


@torch.no_grad()
def evaluate(cfg: Any, model: Any, examples: list[Any], pad: int, device: torch.device) -> dict[str, float]:
    """Validation loss and accuracy over ``examples`` (one process, no gradient)."""
    model.eval()
    sums, n = dict.fromkeys(METRICS[cfg.method], 0.0), 0
    size = max(1, int(cfg.micro_batch_size or cfg.batch_size))
    for i in range(0, len(examples), size):
        batch = collate(cfg, examples, list(range(i, min(i + size, len(examples)))), pad, device)
        batch.pop("index", None)  # the reference cache holds training pairs only
        loss, extra = loss_of(cfg, model, batch)
        sums["train_loss"] += float(loss)
        for key, value in extra.items():
            sums[key] += value
        n += count(batch, cfg.method)
    model.train()
    acc = "reward_accuracy" if cfg.method == "dpo" else "train_mean_token_accuracy"
    return {"valid_loss": sums["train_loss"] / max(n, 1), "valid_mean_token_accuracy": sums[acc] / max(n, 1)}
