"""Trainer on a bring-your-own base: seconds per step, ours vs a plain peft + torch loop, same run.

    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/training_base_bench.py [--steps 3] [--rounds 2]

The base is a random-initialised ~0.5B Qwen2-shaped checkpoint (hidden 896, 24 layers, 14
heads, 2 KV heads, intermediate 4864, the SmolLM2 tokenizer's 49,152 tokens, tied
embeddings: Qwen2.5-0.5B's shape) written with ``save_pretrained`` into a temporary folder and
loaded by both sides from there, as a catalog base is. Both train LoRA r=8 (alpha 16) on
q/k/v/o with AdamW lr 2e-4, fp32 on CPU, batch ``--batch-size`` support chats in the same
seeded order, for ``--steps`` steps. Ours is ``adapters.training.train.train`` as a job runs
it (the catalog base, assistant-only labels, clipping, its hooks writing events to a real
SQLite job store, the cancel check); the plain loop is ``get_peft_model`` + AdamW + the
model's own loss. Timed: the steps only (load, tokenize, save excluded for both). Rounds
alternate plain/ours so load drift hits both; best of each. Goal: ours within 10%. Stops by
itself; writes ``loadtests/results/training-base.md``. The CUDA path (bf16, gradient
checkpointing, QLoRA) is not measured here: no GPU on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loadtests.training_bench import chats  # noqa: E402

SHAPE = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
         "intermediate_size": 4864}
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
RESULTS = Path(__file__).resolve().parent / "results" / "training-base.md"


def make_base(folder: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from adapters.engine.model import ensure_cached

    tok = AutoTokenizer.from_pretrained(ensure_cached())
    cfg = AutoConfig.for_model("qwen2", **SHAPE, vocab_size=len(tok), tie_word_embeddings=True,
                               max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def plain_loop(base: Path, rows: list[dict[str, Any]], batch: int, steps: int, lr: float) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(**LORA, lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    ids = [list(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in rows]
    order = list(range(len(ids)))
    random.Random(0).shuffle(order)  # the trainer's epoch-0 order (seed 0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    t0 = time.perf_counter()
    for s in range(steps):
        picked = [ids[j] for j in order[s * batch:(s + 1) * batch]]
        n = max(map(len, picked))
        x = torch.tensor([b + [tok.pad_token_id] * (n - len(b)) for b in picked])
        mask = torch.tensor([[1] * len(b) + [0] * (n - len(b)) for b in picked])
        loss = model(input_ids=x, attention_mask=mask, labels=x.masked_fill(mask == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "per_step": seconds / steps, "loss": float(loss)}


def ours(base: Path, rows: list[dict[str, Any]], batch: int, steps: int, lr: float, work: Path) -> dict[str, float]:
    from adapters.training.local import DbHooks
    from adapters.training.train import TrainConfig, train
    from gateway.catalog import BaseModel
    from gateway.store import db
    from gateway.store.jobs import JobStore

    path = work / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = db.create_engine(f"sqlite:///{work / 'bench.db'}")
    db.upgrade(engine)
    store = JobStore(engine)
    job = store.create({"backend": "local", "model": "bench-qwen2", "status": "running"})
    cfg = TrainConfig(batch_size=batch, micro_batch_size=batch, learning_rate=lr, lora_r=LORA["r"],
                      lora_alpha=LORA["lora_alpha"], target_modules=LORA["target_modules"], max_steps=steps,
                      warmup_steps=1, checkpoint_every=10_000, max_length=512, gradient_checkpointing=False)
    res = train(cfg, path, work / "out", work / "work", None, DbHooks(store, job["id"], "bench"),
                base=BaseModel("bench-qwen2", str(base)))
    engine.dispose()
    return {"seconds": res.metrics["seconds"], "per_step": res.metrics["seconds"] / res.steps,
            "loss": res.metrics["train_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    import torch

    from adapters.training.train import default_threads

    threads = args.threads or default_threads()
    os.environ["TUNELOOP_TRAIN_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    rows, lr = chats(args.batch_size * args.steps), 2e-4
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "qwen2-0.5b-random"
        n_params = make_base(base)
        print(f"base: {n_params / 1e6:.0f}M parameters at {base}", flush=True)
        plains, mine = [], []
        for r in range(args.rounds):
            plains.append(plain_loop(base, rows, args.batch_size, args.steps, lr))
            print(f"round {r + 1} plain: {plains[-1]}", flush=True)
            with tempfile.TemporaryDirectory() as work:
                mine.append(ours(base, rows, args.batch_size, args.steps, lr, Path(work)))
            print(f"round {r + 1} ours:  {mine[-1]}", flush=True)
    write(args, threads, n_params, plains, mine)


def write(args: Any, threads: int, n_params: int, plains: list[dict[str, float]],
          mine: list[dict[str, float]]) -> None:
    best_p, best_o = min(p["per_step"] for p in plains), min(o["per_step"] for o in mine)
    ratio = best_o / best_p
    rounds = ", ".join(f"{o['per_step'] / p['per_step']:.3f}" for p, o in zip(plains, mine, strict=True))
    text = f"""# Trainer on a bring-your-own base: seconds per step (issue 14)

`HF_HUB_OFFLINE=1 .venv/bin/python loadtests/training_base_bench.py --steps {args.steps} --batch-size \
{args.batch_size} --rounds {args.rounds}`

Base: random-initialised Qwen2-shaped checkpoint, {n_params / 1e6:.0f}M parameters (hidden 896, 24 layers,
14 heads, 2 KV heads, intermediate 4864, SmolLM2 tokenizer vocabulary, tied embeddings), loaded from a
folder by both sides. LoRA r=8 alpha 16 on q/k/v/o, AdamW lr 2e-4, fp32, CPU, {threads} torch thread(s),
batch {args.batch_size} support chats (~72 tokens each), {args.steps} steps per run, {args.rounds} alternating
rounds, best of each. Machine: {os.cpu_count()} logical CPUs ({platform.machine()}), shared with other jobs
(load average {os.getloadavg()[0]:.1f} at the end). No GPU: the CUDA path (bf16, gradient checkpointing,
QLoRA, torchrun on GPUs) is untested here.

| run | s/step (best) | s/step per round | final loss |
|---|---:|---|---:|
| plain peft + torch loop | {best_p:.2f} | {", ".join(f"{p['per_step']:.2f}" for p in plains)} | \
{plains[-1]['loss']:.3f} (all tokens) |
| tuneloop trainer (catalog base) | {best_o:.2f} | {", ".join(f"{o['per_step']:.2f}" for o in mine)} | \
{mine[-1]['loss']:.3f} (assistant tokens) |

**ours / plain = {ratio:.3f}** (per round: {rounds}): {"within" if ratio <= 1.10 else "OVER"} the 10% goal.
"""
    RESULTS.write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
