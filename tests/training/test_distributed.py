"""Training past one process: ``torchrun --nproc-per-node 2`` (two CPU ranks, ``gloo``) on the
training entry point (``tuneloop finetune --in-process``) gives the adapter one process gives,
for the same data, seed and global batch (fp32, max abs difference of the LoRA weights < 1e-4
after 3 steps, where the weights themselves moved over 20x more)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.training.data import sft_rows, write_jsonl

ARGS = ["--epochs", "3", "--batch-size", "4", "--max-length", "48", "--seed", "7", "--lr", "10",
        "--device", "cpu", "--in-process"]


def _finetune(prefix: list[str], base: Path, data: Path, out: Path, home: Path) -> None:
    env = {**os.environ, "TUNELOOP_HOME": str(home), "HF_HUB_OFFLINE": "1", "TUNELOOP_TRAIN_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("TUNELOOP_DATABASE_URL", None)
    run = subprocess.run([*prefix, "-m", "gateway.cli", "finetune", "--model", str(base), "--training-file",
                          str(data), "--output", str(out), *ARGS], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]


def test_two_gloo_ranks_train_the_adapter_one_process_trains(tiny_base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    _finetune([sys.executable], tiny_base, data, tmp_path / "one", tmp_path / "home-one")
    _finetune(torchrun, tiny_base, data, tmp_path / "two", tmp_path / "home-two")
    one = load_file(tmp_path / "one" / "adapter_model.safetensors")
    two = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert one.keys() == two.keys() and one
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    moved = max(float(one[k].abs().max()) for k in one if "lora_B" in k)  # B starts at 0
    assert diff < 1e-4 and moved > 20 * 1e-4, (diff, moved)
