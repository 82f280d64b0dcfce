"""The gateway benchmark's goals (issue "Performance"), read off one run's results.

Ratios are taken within each round, then the median (the machine is shared and noisy):
- non-stream c16 and c64: at least TensorZero's req/s; added p50 at c1 under 0.3 ms;
- stream c16: at least 2x the thinnest pass-through; added TTFT p50 under 1 ms when the upstream
  paces its chunks;
- logging on: at least 95% of logging off (``tuneloop`` vs ``tuneloop-nolog``);
- ``--workers 2``: the scaling over one worker (``tuneloop-w2`` vs ``tuneloop``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

Key = tuple  # (system, mode, concurrency)


def _ratio(results: dict[Key, list], a: str, b: str, mode: str, conc: int) -> float:
    xs = [x.rps / y.rps for x, y in zip(results.get((a, mode, conc)) or [], results.get((b, mode, conc)) or [],
                                        strict=False) if y.rps > 0]
    return statistics.median(xs) if xs else float("nan")


def _verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def goal_lines(results: dict[Key, list], names: list[str], summarize: Callable[[dict, Key], dict | None]) -> list[str]:
    out = []
    for s in names:
        if s in ("direct", "passthrough") or not any(k[0] == s for k in results):
            continue
        parts: list[str] = []
        for conc in (16, 64):
            r = _ratio(results, s, "tensorzero", "ns", conc)
            if s != "tensorzero" and not math.isnan(r):
                parts.append(f"non-stream c{conc} {r:.2f}× TensorZero ({_verdict(r >= 1)} ≥ 1×)")
        ns1: Any = summarize(results, (s, "ns", 1))
        if ns1 and not math.isnan(ns1["add50"]):
            parts.append(f"added p50 c1 {ns1['add50']:.2f} ms ({_verdict(ns1['add50'] < 0.3)} < 0.3 ms)")
        st16: Any = summarize(results, (s, "stream", 16))
        if st16 and not math.isnan(st16["ratio"]):
            parts.append(f"stream c16 {st16['ratio']:.2f}× passthrough ({_verdict(st16['ratio'] >= 2)} ≥ 2×)")
        pc16: Any = summarize(results, (s, "paced", 16))
        if pc16 and not math.isnan(pc16["add50"]):
            parts.append(f"paced: added TTFT p50 c16 {pc16['add50']:.2f} ms ({_verdict(pc16['add50'] < 1)} < 1 ms)")
        if s == "tuneloop":
            for mode, conc in (("ns", 16), ("stream", 16)):
                r = _ratio(results, "tuneloop", "tuneloop-nolog", mode, conc)
                if not math.isnan(r):
                    parts.append(f"logging on / off {mode} c{conc} {r:.2f} ({_verdict(r >= 0.95)} ≥ 0.95)")
        if s == "tuneloop-w2":
            for conc in (16, 64):
                r = _ratio(results, "tuneloop-w2", "tuneloop", "ns", conc)
                if not math.isnan(r):
                    parts.append(f"2 workers / 1 non-stream c{conc} {r:.2f}×")
        errs = sum(r.errors for k, rs in results.items() if k[0] == s for r in rs)
        parts.append(f"errors {errs}")
        out.append(f"- **{s}**: " + "; ".join(parts))
    return out
