"""Losses: SFT cross-entropy on labelled tokens, and DPO (Rafailov et al., 2023).

DPO compares the policy (base + LoRA) with a frozen reference. The reference here is
the base model itself, reached through peft's ``disable_adapter()`` context, so no
second copy of the weights is held. For a pair (chosen ``w``, rejected ``l``):

    logits = beta * ((log pi(w) - log ref(w)) - (log pi(l) - log ref(l)))
    loss   = -log sigmoid(logits)

``log pi(y)`` is the sum of the reply's token log-probabilities (prompt tokens are
labelled ``-100`` and do not count). The batch holds the chosen rows first, then the
rejected rows (``data.pad_dpo``), so both go through one forward pass.

Losses come back as *sums* over the batch (tokens for SFT, pairs for DPO) with their
metrics as sums too: the trainer divides by the global count, so micro-batches and
``torchrun`` ranks add up to exactly the one-batch mean (:func:`count` gives that count
before any forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from adapters.training.data import IGNORE


def _shifted(labels: torch.Tensor) -> torch.Tensor:
    """Labels moved one left (position t predicts token t+1), padded with IGNORE.

    Shifting the labels instead of slicing the logits keeps the [batch, time, vocab]
    logits contiguous, so no copy of the largest tensor of the step is made."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


def _logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits.float()  # a no-op in fp32; bf16 logits are upcast for a stable softmax


def token_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the next tokens (0 where ignored) and the mask of those that count."""
    logits = _logits(model, batch)
    labels = _shifted(batch["labels"])
    nll = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                          reduction="none")  # fused log-softmax + gather
    return -nll.view(labels.shape), labels != IGNORE


def count(batch: dict[str, torch.Tensor], method: str) -> int:
    """What the batch's loss sums over: labelled next tokens (SFT) or pairs (DPO)."""
    if method == "dpo":
        return int(batch["input_ids"].size(0) // 2)
    return int((_shifted(batch["labels"]) != IGNORE).sum())


def sft_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed cross-entropy over assistant tokens, and how many were predicted right (greedy)."""
    logits = _logits(model, batch)
    labels = _shifted(batch["labels"])
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    with torch.no_grad():
        mask = labels != IGNORE
        correct = (logits[mask].argmax(-1) == labels[mask]).sum() if mask.any() else torch.zeros(())
    return loss, {"train_mean_token_accuracy": float(correct)}


@dataclass
class PairLogps:
    chosen: torch.Tensor
    rejected: torch.Tensor


def pair_logps(model: Any, batch: dict[str, torch.Tensor]) -> PairLogps:
    logps, _ = token_logps(model, batch)
    seq = logps.sum(-1)
    half = seq.size(0) // 2
    return PairLogps(seq[:half], seq[half:])


class RefCache:
    """The frozen reference's sequence log-probs per training pair, computed on first sight.

    The reference never changes, so from the second epoch on a step needs only the
    policy's pass: a third less compute per DPO step. Keyed by the pair's index in the
    training set (``batch["index"]``). ``enabled=False``: every step runs the reference pass
    (under FSDP it is a collective, so a rank must not skip it on a hit another rank misses)."""

    def __init__(self, enabled: bool = True) -> None:
        self.logps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.enabled = enabled

    def reference(self, model: Any, batch: dict[str, torch.Tensor]) -> PairLogps:
        idx = [int(i) for i in batch["index"]] if "index" in batch and self.enabled else []
        if idx and all(i in self.logps for i in idx):
            dev = batch["input_ids"].device
            return PairLogps(torch.stack([self.logps[i][0] for i in idx]).to(dev),
                             torch.stack([self.logps[i][1] for i in idx]).to(dev))
        with torch.no_grad(), model.disable_adapter():
            ref = pair_logps(model, batch)
        for k, i in enumerate(idx):
            self.logps[i] = (ref.chosen[k].detach().cpu(), ref.rejected[k].detach().cpu())
        return ref


def dpo_loss(model: Any, batch: dict[str, torch.Tensor], beta: float, cache: RefCache | None = None,
             reference: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed DPO loss over the pairs, with the implicit rewards' margin and accuracy summed too.
    ``reference`` is the peft model whose adapter is switched off for the reference pass
    (default ``model``; under DDP the unwrapped module)."""
    policy = pair_logps(model, batch)
    ref = (cache or RefCache()).reference(reference if reference is not None else model, batch)
    chosen_reward = beta * (policy.chosen - ref.chosen)
    rejected_reward = beta * (policy.rejected - ref.rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).sum()
    margin, chosen_reward, rejected_reward = margin.detach(), chosen_reward.detach(), rejected_reward.detach()
    return loss, {
        "reward_margin": margin.sum().item(),
        "reward_accuracy": (margin > 0).float().sum().item(),
        "chosen_reward": chosen_reward.sum().item(),
        "rejected_reward": rejected_reward.sum().item(),
    }
