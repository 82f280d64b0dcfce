"""Losses: SFT cross-entropy on labelled tokens, and DPO (Rafailov et al., 2023).

DPO compares the policy (base + LoRA) with a frozen reference. The reference here is
the base model itself, reached through peft's ``disable_adapter()`` context, so no
second copy of the weights is held. For a pair (chosen ``w``, rejected ``l``):

    logits = beta * ((log pi(w) - log ref(w)) - (log pi(l) - log ref(l)))
    loss   = -log sigmoid(logits)

``log pi(y)`` is the sum of the reply's token log-probabilities (prompt tokens are
labelled ``-100`` and do not count). The batch holds the chosen rows first, then the
rejected rows (``data.pad_dpo``), so both go through one forward pass.
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


def sft_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over assistant tokens, and the share predicted right (greedy)."""
    logits = _logits(model, batch)
    labels = _shifted(batch["labels"])
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)
    with torch.no_grad():
        mask = labels != IGNORE
        acc = (logits[mask].argmax(-1) == labels[mask]).float().mean() if mask.any() else torch.zeros(())
    return loss, {"train_mean_token_accuracy": acc.item()}


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
    training set (``batch["index"]``)."""

    def __init__(self) -> None:
        self.logps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def reference(self, model: Any, batch: dict[str, torch.Tensor]) -> PairLogps:
        idx = [int(i) for i in batch["index"]] if "index" in batch else []
        if idx and all(i in self.logps for i in idx):
            dev = batch["input_ids"].device
            return PairLogps(torch.stack([self.logps[i][0] for i in idx]).to(dev),
                             torch.stack([self.logps[i][1] for i in idx]).to(dev))
        with torch.no_grad(), model.disable_adapter():
            ref = pair_logps(model, batch)
        for k, i in enumerate(idx):
            self.logps[i] = (ref.chosen[k].detach().cpu(), ref.rejected[k].detach().cpu())
        return ref


def dpo_loss(model: Any, batch: dict[str, torch.Tensor], beta: float,
             cache: RefCache | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO loss, with the implicit rewards' margin and accuracy as metrics."""
    policy = pair_logps(model, batch)
    ref = (cache or RefCache()).reference(model, batch)
    chosen_reward = beta * (policy.chosen - ref.chosen)
    rejected_reward = beta * (policy.rejected - ref.rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    margin, chosen_reward, rejected_reward = margin.detach(), chosen_reward.detach(), rejected_reward.detach()
    return loss, {
        "reward_margin": margin.mean().item(),
        "reward_accuracy": (margin > 0).float().mean().item(),
        "chosen_reward": chosen_reward.mean().item(),
        "rejected_reward": rejected_reward.mean().item(),
    }


@torch.no_grad()
def dpo_eval(model: Any, batch: dict[str, torch.Tensor], beta: float) -> dict[str, float]:
    """Preference metrics of the current policy without a gradient (before/after checks)."""
    _, metrics = dpo_loss(model, batch, beta)
    return metrics
