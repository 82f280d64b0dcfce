"""The local trainer for real: a few LoRA steps on CPU lower the loss (SFT) or open a
preference margin (DPO), the adapter loads into the real engine and changes its replies,
and checkpoints let an interrupted run resume; a cancelled run publishes nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from adapters.training import data
from adapters.training.train import Cancelled, TrainConfig, train
from tests.training.data import ANSWER, dpo_rows, sft_rows, write_jsonl

FAST = {"batch_size": 4, "max_length": 48, "lora_r": 8, "warmup_steps": 1}


class Recorder:
    def __init__(self, stop_after: int | None = None, crash_after: int | None = None) -> None:
        self.events: list[str] = []
        self.metrics: list[dict[str, float]] = []
        self.checkpoints: list[int] = []
        self.stop_after, self.crash_after = stop_after, crash_after

    def on_event(self, message: str, data: dict[str, Any] | None = None, level: str = "info") -> None:
        self.events.append(message)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append(metrics)
        if self.crash_after is not None and step >= self.crash_after:
            raise RuntimeError("simulated crash")

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self.checkpoints.append(step)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.metrics) >= self.stop_after


def test_sft_labels_cover_assistant_turns_only() -> None:
    from transformers import AutoTokenizer

    from adapters.engine.model import ensure_cached

    tok = AutoTokenizer.from_pretrained(ensure_cached())
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Skip me", "weight": 0},
                        {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Learn me"}]}
    ex = data.sft_example(tok, row, 512)
    learned = tok.decode([t for t in ex.labels if t != data.IGNORE])
    assert learned == "Learn me<|im_end|>\n"
    assert len(ex.input_ids) == len(ex.labels)
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(
        [{k: v for k, v in m.items() if k != "weight"} for m in row["messages"]], tokenize=False)


def test_sft_lowers_loss_and_the_adapter_changes_engine_replies(tmp_path: Path, engine_server: Any) -> None:
    train_file = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    out = tmp_path / "adapters" / "sft-test"
    rec = Recorder()
    cfg = TrainConfig(method="sft", n_epochs=8, learning_rate=3e-3, checkpoint_every=100, **FAST)
    result = train(cfg, train_file, out, tmp_path / "work", None, rec)
    losses = [m["train_loss"] for m in rec.metrics]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0], losses
    assert result.tokens_per_s > 0 and result.trained_tokens > 0
    assert {"adapter_config.json", "adapter_model.safetensors", "tuneloop.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "tuneloop.json").read_text())
    assert meta["base_model"]["name"] == "smollm2-135m-instruct" and len(meta["base_model"]["sha256"]) == 64
    assert meta["dataset"]["sha256"] == data.file_sha256(train_file)
    assert meta["hyperparameters"]["lora_r"] == 8 and meta["metrics"]["tokens_per_s"] > 0
    assert not (tmp_path / "work" / "output.tmp").exists()

    root = engine_server.root_url
    r = httpx.post(f"{root}/v1/load_lora_adapter", json={"lora_name": "sft-test", "lora_path": str(out)}, timeout=60)
    assert r.status_code == 200, r.text
    try:
        client = openai.OpenAI(base_url=engine_server.base_url, api_key="x", max_retries=0)
        msgs = [{"role": "system", "content": "Support bot."}, {"role": "user", "content": "Refund window?"}]
        replies = {m: client.chat.completions.create(model=m, messages=msgs, temperature=0, max_tokens=16)
                   .choices[0].message.content for m in ("sft-test", "smollm2-135m-instruct")}
        assert replies["sft-test"] != replies["smollm2-135m-instruct"]
        assert "30 days" in (replies["sft-test"] or ""), (replies, ANSWER)
    finally:
        httpx.post(f"{root}/v1/unload_lora_adapter", json={"lora_name": "sft-test"}, timeout=30)


def test_dpo_opens_a_preference_margin(tmp_path: Path) -> None:
    train_file = write_jsonl(tmp_path / "dpo.jsonl", dpo_rows())
    rec = Recorder()
    cfg = TrainConfig(method="dpo", n_epochs=5, learning_rate=2e-3, beta=0.1, checkpoint_every=100, **FAST)
    result = train(cfg, train_file, tmp_path / "out", tmp_path / "work", None, rec)
    first, last = rec.metrics[0], rec.metrics[-1]
    # step 1 starts from the reference itself (LoRA B = 0): loss ln 2, margin 0
    assert first["train_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert last["train_loss"] < 0.6 and last["reward_margin"] > 0.2, last
    assert last["reward_accuracy"] == 1.0 and last["reward_accuracy"] > first["reward_accuracy"]
    assert result.metrics["reward_margin"] == last["reward_margin"]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    train_file = write_jsonl(tmp_path / "sft.jsonl", sft_rows()[:2])
    cfg = TrainConfig(method="sft", n_epochs=4, checkpoint_every=2, **{**FAST, "batch_size": 2, "max_length": 32})
    crashed = Recorder(crash_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, train_file, tmp_path / "out", tmp_path / "work", None, crashed)
    assert crashed.checkpoints == [2] and not (tmp_path / "out").exists()
    again = Recorder()
    result = train(cfg, train_file, tmp_path / "out", tmp_path / "work", None, again)
    assert "Resumed from checkpoint at step 2" in again.events
    assert [m["step"] for m in again.metrics] == [3, 4] and result.steps == 4
    assert (tmp_path / "out" / "adapter_config.json").is_file()


def test_a_cancelled_run_publishes_nothing(tmp_path: Path) -> None:
    train_file = write_jsonl(tmp_path / "sft.jsonl", sft_rows()[:2])
    cfg = TrainConfig(method="sft", n_epochs=5, **{**FAST, "batch_size": 2, "max_length": 32})
    rec = Recorder(stop_after=1)
    with pytest.raises(Cancelled):
        train(cfg, train_file, tmp_path / "out", tmp_path / "work", None, rec)
    assert len(rec.metrics) == 1 and not (tmp_path / "out").exists()
