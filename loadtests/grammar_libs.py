"""Three grammar libraries for constrained decoding, measured on this CPU with the embedded model's tokenizer.

``llguidance`` (what the engine uses), ``xgrammar`` (vLLM's default backend) and ``outlines-core``
(the Rust core of Outlines), on the same work, in one process, each library in turn, ``--reps`` times:

- **tokenizer setup**: the library's view of SmolLM2's 49,152-token vocabulary (once per model);
- **compile**: a 20-property JSON schema (strings with maxLength, integers, booleans, enums) into a
  matcher, cold (a fresh schema text each rep, so no library cache helps);
- **mask**: walking a valid instance of the schema token by token, the time to compute the allowed-token
  mask at each step, then to advance by the instance's token (mean and p99 per step).

Not a loopback benchmark (no server): the libraries' own costs, which is what the choice rests on.
xgrammar and outlines-core are not project dependencies; install them to run this:

    .venv/bin/pip install --no-deps xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 outlines_core==0.2.14
    HF_HUB_OFFLINE=1 .venv/bin/python loadtests/grammar_libs.py [--reps 3]

Writes ``loadtests/results/grammar-libs.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def schema(rep: int) -> dict[str, Any]:
    kinds = [{"type": "string", "maxLength": 40}, {"type": "integer"}, {"type": "boolean"}, {"enum": ["a", "b", "c"]}]
    return {"type": "object", "additionalProperties": False, "required": [f"field_{rep}_{i}" for i in range(20)],
            "properties": {f"field_{rep}_{i}": kinds[i % 4] for i in range(20)}}


def instance(rep: int) -> str:
    values = ['"Acme parcel 42"', "1234", "true", '"b"']
    return "{" + ",".join(f'"field_{rep}_{i}":{values[i % 4]}' for i in range(20)) + "}"


def llguidance_lib(tok: Any) -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any, int], None]]:
    import llguidance
    import llguidance.hf

    lt = llguidance.hf.from_tokenizer(tok, n_vocab=len(tok))

    def compile_(s: dict[str, Any]) -> Any:
        text = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(s), defaults={"whitespace_flexible": False})
        return llguidance.LLMatcher(lt, text, log_level=0)

    def step(m: Any, token: int) -> None:
        m.compute_bitmask()  # what the engine calls (adapters/engine/structured.py)
        assert m.consume_token(token), "llguidance refused the instance"
    return compile_, step


def xgrammar_lib(tok: Any) -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any, int], None]]:
    import xgrammar as xg

    info = xg.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    compiler = xg.GrammarCompiler(info, cache_enabled=False)
    bitmask = xg.allocate_token_bitmask(1, info.vocab_size)

    def compile_(s: dict[str, Any]) -> Any:
        return xg.GrammarMatcher(compiler.compile_json_schema(json.dumps(s), any_whitespace=False,
                                                                 separators=(",", ":")))

    def step(m: Any, token: int) -> None:
        m.fill_next_token_bitmask(bitmask)
        assert m.accept_token(token), "xgrammar refused the instance"
    return compile_, step


def outlines_lib(tok: Any) -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any, int], None]]:
    import outlines_core as oc
    from outlines_core.json_schema import build_regex_from_schema

    unbyte = {c: b for b, c in _bytes_to_unicode().items()}  # byte-level BPE: token text -> its bytes
    tokens: dict[bytes, list[int]] = {}
    special = set(tok.all_special_ids)
    for text, i in tok.get_vocab().items():
        if i not in special and i != tok.eos_token_id:
            tokens.setdefault(bytes(unbyte[c] for c in text), []).append(i)
    vocab = oc.Vocabulary(tok.eos_token_id, tokens)

    def compile_(s: dict[str, Any]) -> Any:
        return oc.Guide(oc.Index(build_regex_from_schema(json.dumps(s)), vocab))

    def step(g: Any, token: int) -> None:
        g.get_tokens()
        g.advance(token)
    return compile_, step


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet (each byte as the printable character its tokens are written with)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + k) for k, b in enumerate(extra)}}


LIBS = {"llguidance": llguidance_lib, "xgrammar": xgrammar_lib, "outlines-core": outlines_lib}


def measure(name: str, tok: Any, reps: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    compile_, step = LIBS[name](tok)
    setup = time.perf_counter() - t0
    compiles, steps = [], []
    for rep in range(reps):
        t0 = time.perf_counter()
        matcher = compile_(schema(rep))
        compiles.append(time.perf_counter() - t0)
        for token in tok.encode(instance(rep), add_special_tokens=False):
            t0 = time.perf_counter()
            step(matcher, token)
            steps.append(time.perf_counter() - t0)
    steps.sort()
    return {"library": name, "setup_s": setup, "compile_ms": statistics.median(compiles) * 1e3,
            "mask_mean_ms": statistics.mean(steps) * 1e3, "mask_p99_ms": steps[int(len(steps) * 0.99)] * 1e3,
            "steps": len(steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from adapters.engine.model import ensure_cached

    tok = AutoTokenizer.from_pretrained(ensure_cached())
    rows = []
    for name in LIBS:
        try:
            rows.append(measure(name, tok, args.reps))
        except ImportError as exc:
            print(f"{name}: not installed ({exc}); see this script's docstring", file=sys.stderr)
            continue
        print(json.dumps(rows[-1]), file=sys.stderr)
    lines = ["# Grammar libraries on this CPU (SmolLM2-135M's 49k vocabulary; `loadtests/grammar_libs.py`)", "",
             f"{args.reps} reps; a 20-property JSON schema compiled cold each rep; a valid instance walked token by "
             "token (mask, then advance).", "",
             "| library | tokenizer setup | compile (median) | mask per token (mean) | mask p99 | steps |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['library']} | {r['setup_s']:.2f} s | {r['compile_ms']:.1f} ms | {r['mask_mean_ms']:.3f} ms "
              f"| {r['mask_p99_ms']:.3f} ms | {r['steps']} |" for r in rows]
    out = REPO / "loadtests" / "results" / "grammar-libs.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
