"""Run the examples against each arm through the gateway (openai SDK, greedy, bounded tokens).

    result = evaluate(base_url, {"live": "support-bot", "candidate": "support-v4"}, examples)
    result.arms["candidate"].summary() -> {"score", "task", "chrf", "judge", "errors", ...}

Requests carry ``metadata: {"tuneloop": "eval"}`` so the log can tell them from user traffic.
The arms' requests are interleaved per example, so a machine slowing down hurts both alike.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from adapters.evaluation import calls as tc
from adapters.evaluation import checks as chk
from adapters.evaluation.data import Example
from adapters.evaluation.similarity import chrf


@dataclass
class Outcome:
    reply: str
    task: float | None
    checks: list[bool]
    chrf: float | None
    judge: float | None
    latency_s: float
    error: str | None = None
    tool_calls: float | None = None  # examples with tools (calls.py)
    tool_name: float | None = None
    schema_valid: float | None = None  # examples with response_format


@dataclass
class ArmResult:
    model: str
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ok = [o for o in self.outcomes if o.error is None]

        def mean(values: list[float | None]) -> float | None:
            vals = [v for v in values if v is not None]
            return sum(vals) / len(vals) if vals else None

        n = len(self.outcomes)
        return {"model": self.model, "examples": n, "errors": n - len(ok),
                "task": mean([o.task if o.error is None else 0.0 for o in self.outcomes
                              if o.task is not None or o.error]),
                "task_pass": mean([float(all(o.checks)) for o in ok if o.checks]),
                "chrf": mean([o.chrf for o in ok]), "judge": mean([o.judge for o in ok]),
                **{k: mean([getattr(o, k) if o.error is None else 0.0 for o in self.outcomes
                            if getattr(o, k) is not None or o.error]) for k in ("tool_calls", "tool_name")},
                "schema_valid": mean([o.schema_valid if o.error is None else 0.0 for o in self.outcomes
                                      if o.schema_valid is not None or o.error]),
                "latency_mean": mean([o.latency_s for o in ok])}


@dataclass
class EvalResult:
    metric: str  # the primary metric: "task" when checks exist, else "chrf"
    arms: dict[str, ArmResult]
    examples: list[Example]
    seconds: float = 0.0

    def summaries(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, arm in self.arms.items():
            s = arm.summary()
            s["score"] = s.get(self.metric)
            out[name] = s
        return out


def _call(client: Any, model: str, ex: Example, run_checks: list[dict[str, Any]], max_tokens: int,
          judge_model: str | None) -> Outcome:
    t0 = time.perf_counter()
    extra = {k: getattr(ex, k) for k in ("tools", "tool_choice", "parallel_tool_calls", "response_format")
             if getattr(ex, k) is not None}
    try:
        resp = client.chat.completions.create(model=model, messages=ex.prompt, temperature=0,
                                              max_tokens=max_tokens, metadata={"tuneloop": "eval"}, **extra)
        message = resp.choices[0].message
        reply = message.content or ""
    except Exception as exc:  # an arm that fails an example scores 0 on it
        return Outcome("", None, [], None, None, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - t0
    task, results = chk.score([*ex.checks, *run_checks], reply)
    valid = tc.schema_valid(ex.response_format, reply) if ex.response_format else None
    right = names = None
    if ex.tools:
        calls = tc.calls_of(message.model_dump())
        right, names = tc.score_calls(ex.reference_calls, calls)
        results.append(bool(right))  # a right call (or rightly none) is one more task check
        task = sum(results) / len(results)
        reply += "".join(f"\n[call {n}({a})]" for n, a in calls)  # shown in reports
    sim = chrf(reply, ex.reference) if ex.reference else None
    judged = None
    if judge_model:
        from adapters.evaluation.judge import grade

        try:
            judged = grade(client, judge_model, ex.prompt, ex.reference, reply)
        except Exception:
            judged = None
    return Outcome(reply, task, results, sim, judged, latency, tool_calls=right, tool_name=names, schema_valid=valid)


def evaluate(base_url: str, arms: dict[str, str], examples: list[Example], *,
             run_checks: list[dict[str, Any]] | None = None, max_tokens: int = 96, judge_model: str | None = None,
             api_key: str = "tuneloop", concurrency: int = 4, progress: bool = True) -> EvalResult:
    import openai
    from tqdm import tqdm

    run_checks = list(run_checks or [])
    metric = "task" if run_checks or any(ex.checks or ex.tools for ex in examples) else "chrf"
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=1, timeout=300)
    result = EvalResult(metric, {name: ArmResult(model) for name, model in arms.items()}, examples)
    jobs = [(name, i) for i in range(len(examples)) for name in arms]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool, \
            tqdm(total=len(jobs), desc="eval", unit="call", disable=not progress, mininterval=0.5) as bar:
        futures = [pool.submit(_call, client, arms[name], examples[i], run_checks, max_tokens, judge_model)
                   for name, i in jobs]
        outcomes: dict[tuple[str, int], Outcome] = {}
        for key, fut in zip(jobs, futures, strict=True):
            outcomes[key] = fut.result()
            bar.update(1)
    for (name, _i), outcome in sorted(outcomes.items(), key=lambda kv: kv[0][1]):
        result.arms[name].outcomes.append(outcome)
    result.seconds = time.perf_counter() - t0
    return result
