"""Training past one process: ``torchrun --nproc-per-node 2`` (two CPU ranks, ``gloo``) on the
training entry point (``tuneloop finetune --in-process``) gives the adapter one process gives,
for the same data, seed and global batch (fp32, max abs difference of the LoRA weights < 1e-4
after 3 steps, where the weights themselves moved over 20x more): with DDP (a whole base per
rank) and with FSDP (``--strategy fsdp``: base and LoRA sharded over the ranks, a checkpoint
gathered from the shards after every step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.training.data import sft_rows, write_jsonl

ARGS = ["--epochs", "3", "--batch-size", "4", "--max-length", "48", "--seed", "7", "--lr", "10",
        "--device", "cpu", "--in-process"]


def _finetune(prefix: list[str], base: Path, data: Path, out: Path, home: Path, extra: tuple[str, ...] = ()) -> None:
    env = {**os.environ, "TUNELOOP_HOME": str(home), "HF_HUB_OFFLINE": "1", "TUNELOOP_TRAIN_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("TUNELOOP_DATABASE_URL", None)
    run = subprocess.run([*prefix, "-m", "gateway.cli", "finetune", "--model", str(base), "--training-file",
                          str(data), "--output", str(out), *ARGS, *extra], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]


@pytest.fixture(scope="module")
def one_process(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from safetensors.torch import load_file

    tmp = tmp_path_factory.mktemp("dist")
    data = write_jsonl(tmp / "sft.jsonl", sft_rows())
    _finetune([sys.executable], tiny_base, data, tmp / "one", tmp / "home-one")
    return data, load_file(tmp / "one" / "adapter_model.safetensors")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_ranks_train_the_adapter_one_process_trains(
        strategy: str, tiny_base: Path, one_process: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data, one = one_process
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    _finetune(torchrun, tiny_base, data, tmp_path / "two", tmp_path / "home-two",
              ("--strategy", strategy, "--checkpoint-every", "1"))
    two = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert one.keys() == two.keys() and one
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    moved = max(float(one[k].abs().max()) for k in one if "lora_B" in k)  # B starts at 0
    assert diff < 1e-4 and moved > 20 * 1e-4, (diff, moved)
    meta = json.loads((tmp_path / "two" / "tuneloop.json").read_text())
    assert meta["ranks"] == 2 and meta["strategy"] == strategy
    saved = sorted((tmp_path / "home-two" / "jobs").glob("*/checkpoints/step-*/adapter_model.safetensors"))
    assert saved, "a checkpoint gathered from the ranks"
    assert load_file(saved[-1]).keys() == one.keys()
