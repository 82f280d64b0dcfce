"""Engine benchmark: decode tokens/s and time to first token at concurrency 1, 8 and 32.

One run measures, on loopback only and in bounded time:

* the engine (``python -m adapters.engine`` in a subprocess) with every request
  on the base model, then the same requests spread over 4 LoRA adapters;
* the baseline: plain ``transformers`` ``generate()`` in this process, one
  sequence and a batch of 32, same dtype and thread count as the engine, each
  right after the engine's phase at that concurrency (the machine is shared:
  a pair measured minutes apart compares two different loads).

Every request generates exactly ``--tokens`` tokens (``ignore_eos``).  Printed
ratios compare figures from the same run: batched/single, mixed-adapters/base,
ours/generate(), and TTFT p50 at c8 over idle TTFT.

    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/engine_bench.py [--threads 1] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gateway.sse import SSEParser  # noqa: E402

ADAPTERS = ["b1", "b2", "b3", "b4"]
PROMPTS = ["Write a short story about a robot learning to paint.", "Explain how rainbows form.",
           "List some tips for staying productive.", "Describe the city of Paris."]


def build_adapters(home: Path) -> Path:
    """Four r=8 LoRA adapters on q/k/v/o (random B), cached under ``home/bench-adapters``."""
    root = home / "bench-adapters"
    if (root / ADAPTERS[-1] / "adapter_config.json").exists():
        return root
    import torch
    from peft import LoraConfig, get_peft_model

    from adapters.engine.model import load_base_model

    base, _ = load_base_model(home)
    tmp = Path(tempfile.mkdtemp(dir=home))
    for i, name in enumerate(ADAPTERS):
        pm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                   "o_proj"]))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        pm.save_pretrained(str(tmp / name))
        base = pm.unload()
    os.replace(tmp, root) if not root.exists() else None
    return root


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, n, parser = None, 0, SSEParser()
    async with client.stream("POST", url + "/chat/completions", json=body) as r:
        r.raise_for_status()
        async for piece in r.aiter_bytes():
            for data in parser.feed(piece):
                ch = orjson.loads(data)
                if first is None and ch["choices"] and ch["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - t0
                if ch.get("usage"):
                    n = ch["usage"]["completion_tokens"]
    return first or 0.0, time.perf_counter() - t0, n


async def phase(url: str, conc: int, models: list[str], tokens: int, rounds: int, spread: float) -> dict[str, float]:
    """``conc`` closed-loop workers, ``rounds`` requests each; worker ``w`` starts ``w * spread / conc`` s late.

    Staggered starts give the steady state of a busy server (requests arrive
    while others decode).  Without them, fixed-length requests stay in lockstep
    and every TTFT includes the prefill of all ``conc`` prompts, which is
    compute-bound on CPU (see results/engine.md).
    """
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=conc + 4)) as client:
        await one(client, url, models[0], PROMPTS[0], 2)  # warm

        async def worker(w: int) -> list[tuple[float, float, int]]:
            await asyncio.sleep(w * spread / conc)
            return [await one(client, url, models[(w + k) % len(models)], PROMPTS[(w + k) % 4], tokens)
                    for k in range(rounds)]

        t0 = time.perf_counter()
        res = [x for xs in await asyncio.gather(*(worker(w) for w in range(conc))) for x in xs]
        wall = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in res)
    toks = sum(r[2] for r in res)
    decode = statistics.median((r[2] - 1) / max(1e-9, r[1] - r[0]) for r in res)
    return {"tok_s": toks / wall, "decode_per_req": decode, "ttft_p50": statistics.median(ttfts),
            "ttft_p90": ttfts[int(0.9 * (len(ttfts) - 1))],
            "tokens": toks}


class Baseline:
    """Plain ``transformers`` ``generate()`` on the same weights, dtype and threads, in this process."""

    def __init__(self, home: Path, threads: int):
        import torch

        from adapters.engine.model import load_base_model

        torch.set_num_threads(threads)
        self.model, self.tok = load_base_model(home)
        self.tok.padding_side = "left"

    def run(self, bs: int, tokens: int) -> dict[str, float]:
        """A left-padded batch of ``bs`` prompts: tok/s over the whole call, and its first token's time."""
        import torch

        tok, model = self.tok, self.model
        texts = [tok.apply_chat_template([{"role": "user", "content": PROMPTS[i % 4]}], tokenize=False,
                                         add_generation_prompt=True) for i in range(bs)]
        enc = tok(texts, return_tensors="pt", padding=True)
        kw = dict(do_sample=False, pad_token_id=tok.pad_token_id or 2)
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=2, min_new_tokens=2, **kw)
            t0 = time.perf_counter()
            model.generate(**enc, max_new_tokens=1, min_new_tokens=1, **kw)
            ttft = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, **kw)
            wall = time.perf_counter() - t0
        return {f"gen{bs}_tok_s": bs * tokens / wall, f"gen{bs}_ttft": ttft}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (engine and baseline)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("TUNELOOP_HOME", REPO / ".tuneloop")))
    a = ap.parse_args()
    from adapters.engine.engine import default_threads

    threads = a.threads or default_threads()
    home = a.home.resolve()
    adapters = build_adapters(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNELOOP_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "adapters.engine", "--port", str(port), "--adapters",
                             str(adapters), "--threads", str(threads), "--max-batch", "32"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: dict[tuple[str, int], dict[str, float]] = {}
    gen, base = Baseline(home, threads), {}
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url.removesuffix("/v1") + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("engine did not start")
            time.sleep(0.3)
        spread = 0.0
        for conc in (1, 8, 32):
            rounds = {1: 3, 8: 3, 32: 2}[conc]
            rows[("base", conc)] = asyncio.run(phase(url, conc, ["smollm2-135m-instruct"], a.tokens, rounds, spread))
            rows[("4 adapters", conc)] = asyncio.run(phase(url, conc, ADAPTERS, a.tokens, rounds, spread))
            if conc in (1, 32):  # its generate() peer right after (the engine idles): the same minute's load
                base.update(gen.run(conc, a.tokens))
            if conc == 1:  # later phases spread their workers' starts over one idle request's duration
                spread = a.tokens / rows[("base", 1)]["tok_s"]
            print(f"c{conc}: base {rows[('base', conc)]}  mixed {rows[('4 adapters', conc)]}  {base}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report(rows, base, threads, a.tokens)


def report(rows: dict[tuple[str, int], dict[str, float]], base: dict[str, float], threads: int, tokens: int) -> None:
    lines = [f"threads={threads}, fp32, {tokens} tokens per request (ignore_eos), greedy", "",
             "| run | concurrency | tok/s (all requests) | decode tok/s per request | TTFT p50 ms | TTFT p90 ms |",
             "|---|---|---|---|---|---|"]
    for (mode, c), r in rows.items():
        lines.append(f"| engine, {mode} | {c} | {r['tok_s']:.1f} | {r['decode_per_req']:.1f} | "
                     f"{r['ttft_p50'] * 1e3:.0f} | "
                     f"{r['ttft_p90'] * 1e3:.0f} |")
    for bs in (1, 32):
        lines.append(f"| transformers generate() | batch {bs} | {base[f'gen{bs}_tok_s']:.1f} | | "
                     f"{base[f'gen{bs}_ttft'] * 1e3:.0f} | |")
    b1, b32, m32 = rows[("base", 1)], rows[("base", 32)], rows[("4 adapters", 32)]
    ratios = {
        "batched/single (base c32 / c1)": b32["tok_s"] / b1["tok_s"],
        "mixed-adapters/base-only at c32 (goal >= 0.90)": m32["tok_s"] / b32["tok_s"],
        "ours c32 / generate() batch 32 (goal >= 1)": b32["tok_s"] / base["gen32_tok_s"],
        "ours c1 / generate() single (goal >= 1)": b1["tok_s"] / base["gen1_tok_s"],
        "TTFT p50 c8 / idle TTFT (goal <= 3)": rows[("base", 8)]["ttft_p50"] / b1["ttft_p50"],
    }
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    print("\n".join(lines))  # noqa: T201 - a benchmark's output is its table


if __name__ == "__main__":
    main()
