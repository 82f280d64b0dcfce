"""Constrained decoding's cost in the engine: tokens/s at concurrency 8 with ``json_schema`` on vs off.

One run, loopback only, bounded: the engine (``python -m adapters.engine``, SmolLM2-135M-Instruct, 1
thread) serves 8 closed-loop clients, 3 requests each, sampled (temperature 0.8, seeded), up to
``--tokens`` tokens, first free text, then the same requests with a strict ``json_schema``
``response_format``; the pair is repeated ``--reps`` times, back to back (the machine is shared), and
the ratio is the median of the pairs. tok/s = completion tokens / wall of the phase (a constrained
reply ends when its JSON is complete, so both sides are per generated token). Then, in this process:
the compile time of a 20-property schema (first request) and of the same schema again (cached), and
the time to compute one token mask. Writes ``loadtests/results/structured.md``.

    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/structured_bench.py [--tokens 48] [--reps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ASK = [{"role": "user", "content": "Describe a customer of our shop as JSON."}]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "city"],
          "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"},
                         "city": {"type": "string", "maxLength": 24}}}
FORMAT = {"type": "json_schema", "json_schema": {"name": "customer", "schema": SCHEMA, "strict": True}}
WIDE = {"type": "object", "additionalProperties": False, "required": [f"field_{i}" for i in range(20)],
        "properties": {f"field_{i}": [{"type": "string", "maxLength": 40}, {"type": "integer"},
                                      {"type": "boolean"}, {"enum": ["a", "b", "c"]}][i % 4] for i in range(20)}}


async def phase(url: str, conc: int, rounds: int, tokens: int, shaped: bool) -> tuple[float, int]:
    """(completion tok/s, replies that failed to validate) for ``conc`` clients x ``rounds`` requests."""
    import jsonschema

    bad = 0

    async def client_loop(c: int, http: httpx.AsyncClient) -> int:
        nonlocal bad
        n = 0
        for k in range(rounds):
            body = {"model": "smollm2-135m-instruct", "messages": ASK, "max_tokens": tokens, "temperature": 0.8,
                    "seed": c * 100 + k, **({"response_format": FORMAT} if shaped else {})}
            r = await http.post(url + "/v1/chat/completions", json=body)
            r.raise_for_status()
            reply = r.json()
            n += reply["usage"]["completion_tokens"]
            if shaped:
                try:
                    jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), SCHEMA)
                except (ValueError, jsonschema.ValidationError):
                    bad += 1
        return n

    async with httpx.AsyncClient(timeout=600) as http:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(client_loop(c, http) for c in range(conc)))
        wall = time.perf_counter() - t0
    return sum(done) / wall, bad


def compile_and_mask() -> dict[str, float]:
    from adapters.engine.model import load_base_model
    from adapters.engine.protocol import ChatCompletionRequest
    from adapters.engine.structured import Structured

    model, tok = load_base_model(REPO / ".tuneloop")
    s = Structured(tok, model.config.vocab_size)
    s.grammar_for(ChatCompletionRequest.model_validate({"messages": ASK, "response_format": FORMAT}))  # tokenizer
    req = ChatCompletionRequest.model_validate({"messages": ASK, "response_format": {
        "type": "json_schema", "json_schema": {"name": "wide", "schema": WIDE}}})
    t0 = time.perf_counter()
    grammar = s.grammar_for(req)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.grammar_for(req)
    again = time.perf_counter() - t0
    assert grammar is not None
    matcher, steps = grammar.matcher(), []
    for tok_id in tok.encode('{"field_0":"x","field_1":4,"field_2":true,', add_special_tokens=False):
        t0 = time.perf_counter()
        grammar.allowed(matcher)
        steps.append(time.perf_counter() - t0)
        matcher.consume_token(tok_id)
    return {"compile_s": first, "cached_s": again, "mask_ms": statistics.median(steps) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "loadtests" / "results" / "structured.md")
    a = ap.parse_args()
    from tests.fixtures.base_models import start_engine_process, wait_healthy

    home = REPO / ".tuneloop"
    proc, url, log = start_engine_process(["--threads", "1", "--max-batch", "32"], home, "structured-bench.log")
    pairs = []
    try:
        wait_healthy(proc, url, log)
        asyncio.run(phase(url, 2, 1, 4, True))  # warm (and the tokenizer's grammar view)
        for _ in range(a.reps):
            free, _ = asyncio.run(phase(url, 8, 3, a.tokens, False))
            shaped, bad = asyncio.run(phase(url, 8, 3, a.tokens, True))
            pairs.append((free, shaped, bad))
            print(f"free {free:.1f} tok/s, json_schema {shaped:.1f} tok/s, invalid {bad}", flush=True)  # noqa: T201
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    k = compile_and_mask()
    ratio = statistics.median(s / f for f, s, _ in pairs)
    lines = ["# Structured outputs: what constrained decoding costs", "",
             "`loadtests/structured_bench.py` (one run, loopback, bounded): the engine (SmolLM2-135M-Instruct, 1 "
             "thread), 8 closed-loop clients x 3 sampled requests (up to "
             f"{a.tokens} tokens), free text vs a strict `json_schema` `response_format`, each pair back to back; "
             f"machine: {os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f} at the end).", "",
             "| pair | free tok/s | json_schema tok/s | replies that fail the schema |", "|---|---|---|---|"]
    lines += [f"| {i + 1} | {f:.1f} | {s:.1f} | {b} of 24 |" for i, (f, s, b) in enumerate(pairs)]
    lines += ["", "| figure | value | goal |", "|---|---|---|",
              f"| json_schema / free tok/s at c8 (median of pairs) | {ratio:.2f} | >= 0.90 |",
              f"| compile, 20-property schema, first request | {k['compile_s'] * 1e3:.1f} ms | |",
              f"| the same schema again (cached) | {k['cached_s'] * 1e3:.3f} ms | |",
              f"| one token mask (49,152-token vocabulary) | {k['mask_ms']:.2f} ms | |", ""]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
