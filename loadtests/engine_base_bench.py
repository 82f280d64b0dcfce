"""Engine on a bring-your-own base: a random-initialised Qwen2-shaped ~0.5B checkpoint vs ``generate()``.

The base has Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate
4864, q/k/v biases, tied embeddings) with SmolLM2's 49152-token vocabulary (its tokenizer is
reused), ~0.4B parameters; made with ``transformers`` once and cached under
``$TUNELOOP_HOME/bench-base``.  One run, loopback only, bounded:

* the engine: ``tuneloop engine --model DIR`` in a subprocess; at concurrency 1, 8 and 32,
  that many streamed chat requests sent at once, each exactly ``--tokens`` tokens
  (``ignore_eos``, greedy);
* the baseline: ``transformers`` ``generate()`` in this process on the same checkpoint,
  dtype (fp32) and thread count, a left-padded batch of the same size and the same prompts,
  run right after the engine's phase of that size (the engine idles meanwhile), so both
  sides of a ratio see the same load on a shared machine.

tok/s = completion tokens / wall time of the phase (prefill included on both sides).
Goals: ours/generate() >= 1 at 1, >= 2 at 32.

Equal-length requests sent together are a static batch's best case.  Traffic is not like that,
so a second comparison (``--mixed N``, default 64) serves a stream of N requests whose lengths
vary (8 to 48 tokens, a fixed sequence): the engine with 32 closed-loop clients (a client sends
its next request when one ends, so finished rows are refilled at once), ``generate()`` in
static batches of 32 in the same order, each batch running to its longest request (what a
static batcher must do: it cannot know lengths in advance).  tok/s = requested tokens / wall
on both sides.  Writes ``loadtests/results/engine-base.md``.

    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/engine_base_bench.py [--threads 1] [--tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gateway.sse import SSEParser  # noqa: E402

NAME = "qwen2-0.5b-shaped"
SHAPE = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
         "head_dim": 64, "intermediate_size": 4864, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
         "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "use_sliding_window": False}
PROMPTS = ["Write a short story about a robot learning to paint.", "Explain how rainbows form.",
           "List some tips for staying productive.", "Describe the city of Paris."]
CONCURRENCY = (1, 8, 32)


def build_base(home: Path) -> Path:
    """The checkpoint, built once (about 1.6 GB of fp32 safetensors)."""
    target = home / "bench-base" / NAME
    if (target / "DONE").exists():
        return target
    from tests.fixtures.base_models import make_checkpoint, smollm2_tokenizer

    template = smollm2_tokenizer().chat_template
    make_checkpoint("qwen2", target, template, seed=0, scale=0.02, **SHAPE)
    (target / "DONE").write_text("ok\n")
    return target


async def one(client: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> int:
    body = {"model": NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    n, parser = 0, SSEParser()
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for piece in r.aiter_bytes():
            for data in parser.feed(piece):
                if (ch := orjson.loads(data)).get("usage"):
                    n = ch["usage"]["completion_tokens"]
    return n


async def engine_phase(url: str, conc: int, tokens: int) -> float:
    """``conc`` requests at once (as ``generate()`` gets a batch of ``conc``); completion tok/s."""
    async with httpx.AsyncClient(timeout=1200, limits=httpx.Limits(max_connections=conc + 4)) as client:
        await one(client, url, PROMPTS[0], 2)  # warm
        t0 = time.perf_counter()
        done = await asyncio.gather(*(one(client, url, PROMPTS[i % 4], tokens) for i in range(conc)))
        wall = time.perf_counter() - t0
    assert sum(done) == conc * tokens, done
    return sum(done) / wall


def mixed_lengths(n: int) -> list[int]:
    """A fixed, spread sequence of output lengths in [8, 48]."""
    return [8 + (i * 13) % 41 for i in range(n)]


async def engine_stream(url: str, lengths: list[int], conc: int) -> float:
    """``conc`` closed-loop clients over the requests, in order; requested tok/s."""
    async with httpx.AsyncClient(timeout=1200, limits=httpx.Limits(max_connections=conc + 4)) as client:
        await one(client, url, PROMPTS[0], 2)  # warm
        todo = iter(range(len(lengths)))
        got: list[int] = []

        async def client_loop() -> None:
            for i in todo:  # one shared iterator: each request goes to the next free client
                got.append(await one(client, url, PROMPTS[i % 4], lengths[i]))

        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(conc)))
        wall = time.perf_counter() - t0
    assert sum(got) == sum(lengths), (sum(got), sum(lengths))
    return sum(lengths) / wall


class Generate:
    """The baseline: ``transformers`` ``generate()`` on a left-padded batch of the same prompts."""

    def __init__(self, path: Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def phase(self, bs: int, tokens: int) -> float:
        import torch

        texts = [self.tok.apply_chat_template([{"role": "user", "content": PROMPTS[i % 4]}], tokenize=False,
                                              add_generation_prompt=True) for i in range(bs)]
        enc = self.tok(texts, return_tensors="pt", padding=True)
        kw = {"do_sample": False, "pad_token_id": self.tok.pad_token_id}
        with torch.inference_mode():
            self.model.generate(**enc, max_new_tokens=2, min_new_tokens=2, **kw)  # warm
            t0 = time.perf_counter()
            self.model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, **kw)
            return bs * tokens / (time.perf_counter() - t0)

    def stream(self, lengths: list[int], bs: int) -> float:
        """Static batches of ``bs`` in order, each run to its longest request; requested tok/s."""
        import torch

        kw = {"do_sample": False, "pad_token_id": self.tok.pad_token_id}
        t0 = time.perf_counter()
        for start in range(0, len(lengths), bs):
            part = lengths[start:start + bs]
            texts = [self.tok.apply_chat_template([{"role": "user", "content": PROMPTS[(start + i) % 4]}],
                                                  tokenize=False, add_generation_prompt=True)
                     for i in range(len(part))]
            enc = self.tok(texts, return_tensors="pt", padding=True)
            with torch.inference_mode():
                self.model.generate(**enc, max_new_tokens=max(part), min_new_tokens=max(part), **kw)
        return sum(lengths) / (time.perf_counter() - t0)


Pairs = dict[int, list[tuple[float, float]]]


def measure(path: Path, threads: int, tokens: int, home: Path, reps: int, mixed: int) -> Pairs:
    """``(engine, generate())`` tok/s pairs per concurrency, each pair's phases back to back (the engine
    idles during generate()), so both sides of a ratio see the same load on a shared machine."""
    from tests.fixtures.base_models import start_engine_process, wait_healthy

    proc, url, log = start_engine_process(["--model", str(path), "--served-model-name", NAME, "--threads",
                                           str(threads), "--max-batch", "32"], home, "engine-base-bench.log")
    pairs: Pairs = {}
    try:
        gen = Generate(path, threads)
        wait_healthy(proc, url, log, timeout=600)
        for conc in CONCURRENCY:
            for _ in range(reps):
                pairs.setdefault(conc, []).append((asyncio.run(engine_phase(url, conc, tokens)),
                                                   gen.phase(conc, tokens)))
                print(f"c{conc}: engine, generate() tok/s {pairs[conc][-1]}", flush=True)  # noqa: T201
        for _ in range(reps if mixed else 0):
            lengths = mixed_lengths(mixed)
            pairs.setdefault(-mixed, []).append((asyncio.run(engine_stream(url, lengths, 32)),
                                                 gen.stream(lengths, 32)))
            print(f"stream of {mixed} mixed: engine, generate() tok/s {pairs[-mixed][-1]}", flush=True)  # noqa: T201
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return pairs


def kernels(path: Path, threads: int, rows: int = 32, prompt: int = 35) -> dict[str, float]:
    """Seconds for one prefill of ``rows`` x ``prompt`` tokens and (median of 3, alternating) one decode step
    of ``rows`` rows: the engine's batched forward vs transformers' forward with its cache."""
    import torch
    from transformers import AutoModelForCausalLM

    from adapters.engine.forward import BatchedLlama
    from adapters.models.hf import open_checkpoint

    torch.set_num_threads(threads)
    toks = torch.randint(100, 40000, (rows, prompt))
    ours = BatchedLlama(open_checkpoint(path), torch.float32, torch.device("cpu"))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def timed(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    out = {"ours_prefill": timed(lambda: ours.forward(toks, torch.zeros(rows, dtype=torch.long), 0))}
    with torch.inference_mode():
        state = {"cache": None}

        def hf_prefill() -> None:
            state["cache"] = hf(toks, use_cache=True, logits_to_keep=1).past_key_values

        def hf_step() -> None:
            state["cache"] = hf(toks[:, :1], past_key_values=state["cache"], use_cache=True).past_key_values

        out["hf_prefill"] = timed(hf_prefill)
        ours_steps, hf_steps = [], []
        for i in range(3):
            ours_steps.append(timed(lambda i=i: ours.forward(toks[:, :1], torch.full((rows,), prompt + i), 0)))
            hf_steps.append(timed(hf_step))
    out["ours_step"], out["hf_step"] = statistics.median(ours_steps), statistics.median(hf_steps)
    print(f"kernels: {out}", flush=True)  # noqa: T201
    return out


def report(pairs: Pairs, threads: int, tokens: int, params: int, k: dict[str, float]) -> str:
    load = os.getloadavg()[0]
    lines = [
        "# Engine on a bring-your-own base (Qwen2-shaped, ~0.5B, random weights)", "",
        "`loadtests/engine_base_bench.py` (one run, loopback only, bounded): `tuneloop engine --model DIR` on a",
        f"random-initialised Qwen2.5-0.5B-shaped checkpoint ({params / 1e6:.0f}M parameters with SmolLM2's 49152-token",
        "vocabulary; hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, q/k/v biases, tied",
        "embeddings), against `transformers` `generate()` on the same checkpoint, dtype and threads, in the",
        "same run (each engine phase followed at once by its generate() phase, the engine idle meanwhile).",
        f"Each phase: N streamed requests sent at once vs a left-padded batch of N; every request {tokens} tokens",
        "(`ignore_eos`, greedy); tok/s = completion tokens / wall (prefill included on both sides); --reps",
        "pairs per N, each pair's phases back to back.", "",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), no GPU, shared with other jobs (load average "
        f"{load:.1f} at the end of the run); {threads} torch thread(s), fp32. Compare ratios within one run.", "",
        "| concurrency / batch | engine tok/s | generate() tok/s | ratio (median of pairs) | goal |",
        "|---|---|---|---|---|"]
    goals = {1: ">= 1", 8: "", 32: ">= 2"}
    for c in (c for c in CONCURRENCY if c in pairs):
        ours, base = (" / ".join(f"{p[i]:.1f}" for p in pairs[c]) for i in (0, 1))
        ratio = statistics.median(e / g for e, g in pairs[c])
        lines.append(f"| {c} | {ours} | {base} | {ratio:.2f} | {goals[c]} |")
    for key in [k for k in pairs if k < 0]:
        ours, base = (" / ".join(f"{p[i]:.1f}" for p in pairs[key]) for i in (0, 1))
        ratio = statistics.median(e / g for e, g in pairs[key])
        lengths = mixed_lengths(-key)
        lines += ["", f"A stream of {-key} requests of mixed lengths ({min(lengths)}-{max(lengths)} tokens, "
                  f"{sum(lengths)} in all): the engine with 32 closed-loop clients, generate() in static "
                  "batches of 32 (each to its longest):", "",
                  "| stream | engine tok/s | generate() tok/s | ratio (median of pairs) |", "|---|---|---|---|",
                  f"| {-key} requests, 32 at a time | {ours} | {base} | {ratio:.2f} |"]
    lines += [
        "", "Same work per step, measured in-process (32 rows; prompt 35 tokens):", "",
        "| step | engine forward s | transformers forward s |", "|---|---|---|",
        f"| prefill 32 x 35 tokens | {k['ours_prefill']:.2f} | {k['hf_prefill']:.2f} |",
        f"| one decode step, 32 rows | {k['ours_step']:.2f} | {k['hf_step']:.2f} |", "",
        "Reading: at this size a CPU step is compute-bound, and both sides do the same matrix products",
        "(the table above: one step and one prefill cost the same on both), so per step the engine is at",
        "parity with transformers. What it gains with 32 equal requests is its prefix cache (the requests",
        "rotate over 4 prompts sharing SmolLM2's system block, so most of their prefill is skipped;",
        "generate() prefills every row): short of the 2x goal. In a stream of mixed lengths it refills a",
        "finished row at once where generate() runs each batch to its longest request, but it also",
        "interleaves the newcomers' prefills with decoding, and the stream's tail runs with few rows.",
        "2x at 32 would need cheaper products than PyTorch's fp32 ones (bf16 or int8 weights on CPU),",
        "which would change the numerics the parity tests pin to transformers': not done. On this",
        "shared machine the same phase varies by +-30% from one minute to the next: read ratios near 1",
        "as parity.", "",
        "The CUDA path (bf16) is untested here: this machine has no GPU.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (engine and baseline)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens generated per request")
    ap.add_argument("--reps", type=int, default=1, help="engine/generate() pairs per concurrency")
    ap.add_argument("--mixed", type=int, default=64, help="requests in the mixed-length stream (0: none)")
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("TUNELOOP_HOME", REPO / ".tuneloop")))
    ap.add_argument("--out", type=Path, default=REPO / "loadtests" / "results" / "engine-base.md")
    a = ap.parse_args()
    from adapters.engine.engine import default_threads

    threads = a.threads or default_threads()
    home = a.home.resolve()
    path = build_base(home)
    pairs = measure(path, threads, a.tokens, home, a.reps, a.mixed)
    k = kernels(path, threads)
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        params = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())
    text = report(pairs, threads, a.tokens, params, k)
    a.out.write_text(text)
    print(text)  # noqa: T201


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
