"""Training throughput: our LoRA trainer vs a plain torch loop, measured in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/training_bench.py [--chats 100] [--dpo-steps 3]

The issue's goal: one epoch of LoRA r=8 SFT over 100 support chats (~80 tokens each,
batch 8, fp32) in a plain torch loop is the baseline; our trainer (``adapters.training.
train``, with its events written to a real SQLite job store, tqdm, the assistant-only
mask) must stay within 10% of it, and reports tokens/s. Both runs see the same chats,
the same batches (same seeded order), the same LoRA config and thread count; the
baseline uses the model's built-in loss over all tokens (what a plain loop does). The
timed part is the loop (model load, tokenizing and saving excluded for both). Then DPO:
a few steps of 8 pairs each (policy + reference forward passes), as steps/s.
Prints a Markdown table; bounded (one epoch, ``--dpo-steps`` steps) and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = [("refund", "Refunds are accepted within 30 days of delivery; the money is back in 5 to 7 business days."),
          ("shipping", "Standard shipping takes 3 to 5 business days; express arrives the next working day."),
          ("password", "Use the 'Forgot password' link on the sign-in page; the reset email arrives in a minute."),
          ("invoice", "Invoices are in Settings, then Billing; each can be downloaded as a PDF."),
          ("cancel", "You can cancel any time from Settings, then Plan; you keep access until the period ends.")]
OPENERS = ["Hi, quick question:", "Hello!", "Hey there,", "Good morning.", "Sorry to bother you,"]


def chats(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic support chats of about 80 tokens (system + user + assistant)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, answer = rng.choice(TOPICS)
        user = f"{rng.choice(OPENERS)} how does {topic} work for order #{1000 + i}? Thanks a lot."
        rows.append({"messages": [{"role": "system", "content": "You are Acme's support assistant."},
                                  {"role": "user", "content": user},
                                  {"role": "assistant", "content": f"Thanks for asking. {answer} Anything else?"}]})
    return rows


def pairs(n: int) -> list[dict[str, Any]]:
    return [{"input": {"messages": c["messages"][:2]}, "preferred_output": [c["messages"][2]],
             "non_preferred_output": [{"role": "assistant", "content": "I don't know, please ask someone else."}]}
            for c in chats(n, seed=1)]


def plain_loop(rows: list[dict[str, Any]], batch_size: int, lr: float, seed: int) -> dict[str, float]:
    """The baseline: peft LoRA + AdamW + the model's own loss, nothing else."""
    import torch
    from peft import LoraConfig, get_peft_model

    from adapters.engine.model import load_base_model

    torch.manual_seed(seed)
    model, tok = load_base_model(None)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    ids = [tok.apply_chat_template(r["messages"], tokenize=True, return_dict=False) for r in rows]
    ids = [list(x["input_ids"] if isinstance(x, dict) else x) for x in ids]
    order = list(range(len(ids)))
    random.Random(seed * 1000).shuffle(order)  # the trainer's epoch-0 order
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    tokens, t0 = 0, time.perf_counter()
    for i in range(0, len(order), batch_size):
        batch = [ids[j] for j in order[i:i + batch_size]]
        n = max(map(len, batch))
        x = torch.tensor([b + [tok.pad_token_id] * (n - len(b)) for b in batch])
        mask = torch.tensor([[1] * len(b) + [0] * (n - len(b)) for b in batch])
        labels = x.masked_fill(mask == 0, -100)
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "steps": math.ceil(len(order) / batch_size), "final_loss": loss.item()}


def ours(method: str, rows: list[dict[str, Any]], batch_size: int, lr: float, seed: int,
         max_steps: int | None, work: Path) -> dict[str, float]:
    """Our trainer with its real hooks: events and checkpoints as rows in a SQLite job store."""
    from adapters.training.local import DbHooks
    from adapters.training.train import TrainConfig, train
    from gateway.store import db
    from gateway.store.jobs import JobStore

    path = work / f"{method}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = db.create_engine(f"sqlite:///{work / 'bench.db'}")
    db.upgrade(engine)
    store = JobStore(engine)
    job = store.create({"backend": "local", "model": "smollm2-135m-instruct", "status": "running"})
    cfg = TrainConfig(method=method, batch_size=batch_size, learning_rate=lr, seed=seed, max_steps=max_steps,
                      max_length=512, warmup_steps=1, checkpoint_every=10_000)
    res = train(cfg, path, work / f"out-{method}", work / f"work-{method}", None,
                DbHooks(store, job["id"], f"bench-{method}"))
    events = len(store.events(job["id"], limit=10_000)[0])
    engine.dispose()
    return {"seconds": res.metrics["seconds"], "tokens_per_s": res.tokens_per_s, "steps": res.steps,
            "tokens": res.tokens_per_s * res.metrics["seconds"], "final_loss": res.metrics["train_loss"],
            "events": events, **{k: v for k, v in res.metrics.items() if k.startswith("reward")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chats", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dpo-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the trainer's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="alternate plain/ours this many times; best of each")
    args = ap.parse_args()
    import torch

    from adapters.training.train import default_threads

    threads = args.threads or default_threads()
    os.environ["TUNELOOP_TRAIN_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    rows, lr = chats(args.chats), 2e-4
    bases, sfts = [], []
    for r in range(args.rounds):  # alternate, so drift in the machine's load hits both alike
        with tempfile.TemporaryDirectory() as tmp:
            bases.append(plain_loop(rows, args.batch_size, lr, args.seed))
            print(f"round {r + 1} plain loop: {bases[-1]}", flush=True)
            sfts.append(ours("sft", rows, args.batch_size, lr, args.seed, None, Path(tmp)))
            print(f"round {r + 1} our trainer (sft): {sfts[-1]}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        dpo = ours("dpo", pairs(args.batch_size * args.dpo_steps), args.batch_size, lr, args.seed, None, Path(tmp))
        print(f"our trainer (dpo): {dpo}", flush=True)
    base = min(bases, key=lambda b: b["seconds"])
    sft = min(sfts, key=lambda b: b["seconds"])
    ratios = (f"{o['seconds'] / b['seconds']:.3f}" for b, o in zip(bases, sfts, strict=True))
    print("\nper round, ours / plain: " + ", ".join(ratios))
    report(args, threads, base, sft, dpo)


def report(args: Any, threads: int, base: dict[str, float], sft: dict[str, float], dpo: dict[str, float]) -> None:
    import platform

    ratio = sft["seconds"] / base["seconds"]  # best of the rounds, each
    print(f"\n{args.chats} chats, batch {args.batch_size}, LoRA r=8 (q,k,v,o), fp32, {threads} thread(s), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"load avg {os.getloadavg()[0]:.1f}\n")
    print("| run | steps | loop s | tokens/s | final loss |")
    print("|---|---:|---:|---:|---:|")
    print(f"| plain torch loop (SFT, 1 epoch) | {base['steps']} | {base['seconds']:.1f} | "
          f"{base['tokens_per_s']:.0f} | {base['final_loss']:.3f} |")
    print(f"| tuneloop trainer (SFT, 1 epoch) | {sft['steps']} | {sft['seconds']:.1f} | "
          f"{sft['tokens_per_s']:.0f} | {sft['final_loss']:.3f} |")
    print(f"| tuneloop trainer (DPO, 8 pairs/step) | {dpo['steps']} | {dpo['seconds']:.1f} | "
          f"{dpo['tokens_per_s']:.0f} | {dpo['final_loss']:.3f} |")
    verdict = "within" if ratio <= 1.10 else "OVER"
    print(f"\nSFT: ours / plain = {ratio:.3f} ({verdict} the 10% budget); "
          f"DPO: {dpo['steps'] / dpo['seconds']:.3f} steps/s ({dpo['seconds'] / dpo['steps']:.1f} s per step "
          f"of {args.batch_size} pairs), reward accuracy {dpo.get('reward_accuracy', float('nan')):.2f}, "
          f"margin {dpo.get('reward_margin', float('nan')):.3f}")


if __name__ == "__main__":
    main()
