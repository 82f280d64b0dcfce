"""The evaluation as a terminal table, a PNG plot, and a record stored with the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.evaluation.runner import EvalResult

ROWS = [("score", "score (primary)"), ("task", "task checks (mean)"), ("task_pass", "all checks pass"),
        ("tool_calls", "tool calls right"), ("tool_name", "right function"), ("schema_valid", "schema valid"),
        ("chrf", "chrF vs reference"), ("judge", "LLM judge (0-1)"), ("errors", "errors"),
        ("latency_mean", "latency mean (s)")]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(result: EvalResult) -> str:
    s = result.summaries()
    names = list(s)
    width = max(14, *(len(s[n]["model"]) for n in names)) + 2
    lines = [f"{'metric':<22}" + "".join(f"{n:>{width}}" for n in names),
             f"{'model':<22}" + "".join(f"{s[n]['model']:>{width}}" for n in names)]
    for key, label in ROWS:
        if all(s[n].get(key) is None for n in names):
            continue
        lines.append(f"{label:<22}" + "".join(f"{_fmt(s[n].get(key)):>{width}}" for n in names))
    lines.append(f"primary metric: {result.metric}; {len(result.examples)} held-out examples; "
                 f"{result.seconds:.0f} s")
    return "\n".join(lines)


def traffic_table(stats: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'arm':<48}{'requests':>9}{'error rate':>11}{'p50 s':>8}{'rated':>7}{'rating':>8}"]
    for arm, v in stats.items():
        lines.append(f"{arm:<48}{v['requests']:>9}{v['error_rate']:>11.3f}{_fmt(v['latency_p50']):>8}"
                     f"{v['ratings']:>7}{_fmt(v['rating_mean']):>8}")
    return "\n".join(lines)


def plot(result: EvalResult, path: Path, title: str = "candidate vs live (held-out)") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.summaries()
    keys = [k for k in ("task", "task_pass", "chrf", "judge") if any(s[n].get(k) is not None for n in s)]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(keys), 3.6))
    width = 0.8 / max(1, len(s))
    for i, name in enumerate(s):
        vals = [s[name].get(k) or 0.0 for k in keys]
        xs = [j + i * width for j in range(len(keys))]
        bars = ax.bar(xs, vals, width, label=f"{name} ({s[name]['model']})"[:60])
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=8)
    ax.set_xticks([j + width * (len(s) - 1) / 2 for j in range(len(keys))], keys)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score (0-1)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def record(result: EvalResult, dataset: str | None = None, plot_path: Path | None = None) -> dict[str, Any]:
    """What is stored in ``adapters.metrics["eval"]``."""
    return {"metric": result.metric, "examples": len(result.examples), "dataset": dataset,
            "plot": str(plot_path) if plot_path else None, "seconds": round(result.seconds, 1),
            **result.summaries()}


def store(engine: Any, candidate_model: str, rec: dict[str, Any]) -> str | None:
    """Attach the evaluation to the candidate adapter when it is one of the registry's."""
    from gateway.store.registry import AdapterRegistry

    reg = AdapterRegistry(engine)
    adapter = reg.get(candidate_model)
    if adapter is None:
        return None
    reg.merge_metrics(adapter["id"], {"eval": rec})
    return str(adapter["id"])
