"""The losses score only the labelled positions (``logits_to_keep``): the same loss, log-probs, accuracy and
LoRA gradients as the textbook computation over every position's logits, on random-initialised checkpoints
of each supported family, with rows of different prompt lengths and padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from adapters.models.arch import SUPPORTED
from adapters.training.data import IGNORE
from adapters.training.dpo import count, sequence_logps, sft_loss
from tests.fixtures.base_models import make_checkpoint, make_lora, smollm2_tokenizer

FAMILIES = sorted(set(SUPPORTED.values()))


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    """Three rows: prompts of 5, 9 and 3 tokens, answers of 4, 2 and 6, right-padded to 12; and a row with no
    label at all (it must add nothing)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (4, 12), generator=gen)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for row, (prompt, answer) in enumerate([(5, 4), (9, 2), (3, 6), (7, 0)]):
        labels[row, prompt:prompt + answer] = ids[row, prompt:prompt + answer]
        mask[row, :prompt + answer] = 1
        ids[row, prompt + answer:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _textbook(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every position's logits; (summed loss, per-row summed log-probs, tokens predicted right)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                          reduction="none").view(labels.shape)
    keep = labels != IGNORE
    return nll.sum(), -nll.sum(-1), int((logits[keep].argmax(-1) == labels[keep]).sum())


def _grads(model: Any) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_losses_over_labelled_positions_match_every_positions_logits(family: str, tmp_path: Path) -> None:
    base = make_checkpoint(family, tmp_path / "base", smollm2_tokenizer().chat_template)
    model = make_lora(base, tmp_path / "lora", modules=["q_proj", "v_proj"]).train()
    batch = _batch(model.config.vocab_size)

    want_loss, want_logps, want_right = _textbook(model, batch)
    want_loss.backward()
    want_grads = _grads(model)
    loss, metrics = sft_loss(model, batch)
    loss.backward()
    grads = _grads(model)

    assert count(batch, "sft") == 12
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-4)
    assert metrics["train_mean_token_accuracy"] == want_right
    assert want_grads and grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert grad.abs().sum() > 0, name  # a test that can fail: LoRA weights do get a gradient
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        logps = sequence_logps(model, batch)
    torch.testing.assert_close(logps, want_logps.detach(), rtol=1e-5, atol=1e-4)
    assert logps[3] == 0.0  # the row without a label
