"""The report of ``soak.py``: a markdown file (a summary and a table per process for each target)
and a plot of RSS per process, RSS relative to the end of warm-up, and req/s and errors over time
(the same name, ``.png``; matplotlib from the project's venv).

RSS growth of a process = median of its samples in the last W s of the run / median of its samples
in the last W s of the warm-up − 1, with W = min(60 s, the warm-up); the warm-up is the first
``--warmup-frac`` of the run. The trend is the least-squares slope of RSS over the samples after
warm-up: a plateau is ~0, a leak stays positive however long the run.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

GOAL_GROWTH = 0.05
MIB = 2**20
ROOT = Path(__file__).resolve().parents[1]
CHATS = ("plain", "stream")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def windows(ph: Any, frac: float) -> tuple[float, float]:
    """(end of warm-up, W) in s since the load started."""
    warm = ph.duration_s * frac
    return warm, min(60.0, warm)


def growth(ph: Any, series: list[tuple[float, int, int]], frac: float) -> dict[str, float]:
    warm, w = windows(ph, frac)
    at_warm = [r for t, _, r in series if warm - w <= t <= warm]
    at_end = [r for t, _, r in series if t >= ph.duration_s - w]
    out = {"start": series[0][2], "peak": max(r for _, _, r in series), "last": series[-1][2]}
    out["warm"] = statistics.median(at_warm) if at_warm else float("nan")
    out["end"] = statistics.median(at_end) if at_end else float("nan")
    out["growth"] = out["end"] / out["warm"] - 1 if at_warm and at_end else float("nan")
    after = [(t, r) for t, _, r in series if t >= warm]  # the trend after warm-up, MiB per minute
    out["slope"] = statistics.linear_regression([t for t, _ in after], [r for _, r in after]).slope * 60 / MIB \
        if len({t for t, _ in after}) > 1 else float("nan")
    return out


def ms(s: float) -> str:
    return "—" if s != s else f"{s * 1000:,.0f}"


def errors(ph: Any) -> collections.Counter:
    return collections.Counter({f"{k} {s}": n for (k, s), n in ph.counts.items() if s != "200"})


def section(ph: Any, a: Any) -> tuple[list[str], list[str]]:
    """The target's markdown and its goal lines."""
    warm, w = windows(ph, a.warmup_frac)
    ok = {k: ph.counts[k, "200"] for k in (*CHATS, "feedback", "dataset")}
    per_s = [(c["plain_ok"] + c["stream_ok"]) / ph.sample_s for i, c in sorted(ph.intervals.items())
             if (i + 1) * ph.sample_s <= ph.duration_s]
    errs, log = errors(ph), ph.log
    lost = log.get("unique", 0) - log.get("found", 0)
    builds = [s for _, st, s in ph.builds if st == "rc=0"]
    xs = sorted(x for _, x in ph.load)
    load = f"min {xs[0]:.1f}, median {statistics.median(xs):.1f}, max {xs[-1]:.1f}" if xs else "—"
    what = ("`tuneloop serve` with no config: SmolLM2-135M-Instruct on the engine child (CPU)"
            if ph.target == "embedded" else
            "a `vllm` target on loadtests/mock_upstream.py (8 chunks, no delay), no engine")
    md = [f"## {ph.target}: {what}", "",
          f"{ph.duration_s / 60:g} min at concurrency {a.concurrency} (plain and streamed in turn, max_tokens "
          f"{a.max_tokens}), feedback {a.feedback_rps:g}/s, a dataset build every {a.dataset_every_s:g} s; RSS "
          f"every {ph.sample_s:g} s; warm-up = the first {warm:.0f} s, growth = median of the last {w:.0f} s vs "
          f"median of the warm-up's last {w:.0f} s.", "",
          "| chat 200s (plain / streamed) | chat req/s (mean; min–max per interval) | p50 / p99 ms plain "
          "| p50 / p99 ms streamed | feedback 200s | dataset builds ok (median s) | errors | logged / answered "
          "| lost |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
          f"| {ok['plain'] + ok['stream']:,} ({ok['plain']:,} / {ok['stream']:,}) "
          f"| {(ok['plain'] + ok['stream']) / ph.duration_s:,.1f} "
          f"({min(per_s, default=0):,.1f}–{max(per_s, default=0):,.1f}) "
          f"| {ms(pct(ph.lat['plain'], 50))} / {ms(pct(ph.lat['plain'], 99))} "
          f"| {ms(pct(ph.lat['stream'], 50))} / {ms(pct(ph.lat['stream'], 99))} | {ok['feedback']:,} "
          f"| {ok['dataset']} of {len(ph.builds)} ({statistics.median(builds) if builds else float('nan'):.1f}) "
          f"| {sum(errs.values())} | {log.get('found', 0):,} / {log.get('unique', 0):,} | {lost:,} |", "",
          "| process | pid | RSS at ready MiB | end of warm-up MiB | end MiB | peak MiB | growth after warm-up "
          "| < 5 % | trend after warm-up MiB/min |",
          "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    misses = []
    for name, series in ph.rss.items():
        g = growth(ph, series, a.warmup_frac)
        pids = list(dict.fromkeys(pid for _, pid, _ in series))
        good = g["growth"] < GOAL_GROWTH
        misses += [] if good else [f"{name} {g['growth']:+.1%}"]
        md.append(f"| {name} | {' → '.join(map(str, pids))} | {g['start'] / MIB:,.1f} | {g['warm'] / MIB:,.1f} "
                  f"| {g['end'] / MIB:,.1f} | {g['peak'] / MIB:,.1f} | {g['growth']:+.1%} "
                  f"| {'yes' if good else 'NO'} | {g['slope']:+.2f} |")
    md += ["", f"- errors: {', '.join(f'{k}: {n}' for k, n in errs.most_common()) or 'none'}",
           f"- log: {log.get('found', 0):,} of {log.get('unique', 0):,} answered completion ids in `interactions` "
           f"({log.get('answered', 0):,} 200s collected, {ph.counts['prewarm', '200']} of them the pre-warm's)"
           f"{', missing e.g. ' + str(log['missing']) if lost else ''}; "
           f"interactions by status {log.get('by_status', {})}; feedback rows {log.get('feedback rows', 0):,} "
           f"(feedback 200s {ok['feedback']:,}); datasets rows {log.get('datasets rows', 0)}; SQLite files "
           f"{log.get('db MiB', 0):,.1f} MiB",
           "- metrics at the end: " + ", ".join(f"{k} {v:g}" if v is not None else f"{k} absent"
                                                for k, v in ph.metrics.items()),
           f"- dataset builds: {', '.join(f'{f} {st} {s:.1f}s' for f, st, s in ph.builds) or 'none'}",
           f"- the machine's 1-min load average at the samples: {load}",
           *[f"- {n}" for n in ph.notes]]
    goals = [f"- **{ph.target}**: RSS growth < 5 % after warm-up: "
             f"{'meets' if not misses else 'misses (' + ', '.join(misses) + ')'}; 0 errors: "
             f"{'meets' if not errs else f'misses ({sum(errs.values())})'}; every 200 in the log: "
             f"{'meets' if log and lost == 0 and log['unique'] == log['answered'] else f'misses ({lost} lost)'}"]
    return md, goals


def plot(path: Path, phases: list[Any], a: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")

    fig, axes = plt.subplots(3, len(phases), figsize=(7 * len(phases), 10), sharex="col", squeeze=False)
    for col, ph in enumerate(phases):
        ax_abs, ax_rel, ax_rps = axes[:, col]
        warm, _ = windows(ph, a.warmup_frac)
        for name, series in ph.rss.items():
            ts, rss = [t for t, _, _ in series], [r / MIB for _, _, r in series]
            ref = growth(ph, series, a.warmup_frac)["warm"] / MIB
            (line,) = ax_abs.plot(ts, rss, marker=".", lw=1, label=name)
            if ref == ref:
                ax_rel.plot(ts, [100 * (r / ref - 1) for r in rss], lw=1, color=line.get_color(), label=name)
        iv = sorted(ph.intervals.items())
        xs = [min((i + 1) * ph.sample_s, ph.duration_s) for i, _ in iv]
        ax_rps.plot(xs, [(c["plain_ok"] + c["stream_ok"]) / max(1e-9, x - i * ph.sample_s)
                         for x, (i, c) in zip(xs, iv, strict=True)], label="chat 200s / s")
        ax_err = ax_rps.twinx()
        ax_err.bar(xs, [c["errors"] for _, c in iv], width=ph.sample_s * 0.6, color="tab:red", alpha=0.5,
                   label="errors / interval")
        ax_err.set_ylabel("errors per interval", color="tab:red")
        ax_err.set_ylim(0, max([1, *(c["errors"] for _, c in iv)]) * 1.1)
        ax_rel.axhline(100 * GOAL_GROWTH, color="tab:red", ls=":", lw=1)
        for ax in (ax_abs, ax_rel, ax_rps):
            ax.axvspan(0, warm, color="grey", alpha=0.12)
            if any(t < 0 for s in ph.rss.values() for t, _, _ in s):
                ax.axvspan(min(t for s in ph.rss.values() for t, _, _ in s), 0, color="tab:blue", alpha=0.08)
            ax.grid(alpha=0.3)
        ax_abs.set_yscale("log")
        ax_abs.yaxis.set_major_formatter(plain)
        ax_abs.yaxis.set_minor_formatter(plain)
        ax_abs.set_title(f"{ph.target} (grey: warm-up; blue, t < 0: pre-warm)")
        ax_abs.set_ylabel("RSS MiB (log)")
        ax_rel.set_ylabel("RSS vs end of warm-up, %")
        ax_rps.set_ylabel("chat 200s per s")
        ax_rps.set_xlabel("s since the load started")
        ax_abs.legend(fontsize=8, loc="center right")
        ax_rps.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(out: Path, phases: list[Any], a: Any) -> str:
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    md = [f"# Soak (loadtests/soak.py --minutes {a.minutes:g} --concurrency {a.concurrency} --sample-s {a.sample_s:g}, "
          f"{dt.datetime.now():%Y-%m-%d %H:%M}, commit {git.stdout.strip() or '?'}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f})", "",
          "Each target its own `tuneloop serve` and fresh SQLite home, one after the other (see soak.py's docstring); "
          "RSS is VmRSS of every process of the gateway's tree (and of the mock), the load generator excluded. "
          "Goals, reported not asserted:", ""]
    body = []
    for ph in phases:
        sec, goals = section(ph, a)
        md += goals
        body += ["", *sec]
    md += body + ["", f"![RSS per process, req/s and errors over time]({out.with_suffix('.png').name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    plot(out.with_suffix(".png"), phases, a)
    return "\n".join(md)
