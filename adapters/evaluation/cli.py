"""``tuneloop eval``: candidate vs live on held-out data, through the gateway."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def eval_(
    candidate: Annotated[str, typer.Option(help="model name the gateway serves (an alias or an adapter)")],
    live: Annotated[str, typer.Option(help="the model to beat (usually the alias)")],
    data: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="held-out JSONL (SFT format)")] = None,
    dataset: Annotated[str | None, typer.Option(help="a dataset id: its validation split")] = None,
    base_url: Annotated[str | None, typer.Option(help="gateway (default $TUNELOOP_GATEWAY_URL or :8000)")] = None,
    judge: Annotated[str | None, typer.Option(help="a model to grade replies 1-5 (LLM-as-judge)")] = None,
    check: Annotated[list[str] | None,
                     typer.Option(help="run-wide check: contains:TEXT, regex:P, json, label:V")] = None,
    max_tokens: int = 96,
    limit: Annotated[int | None, typer.Option(help="at most this many examples")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG path (default $TUNELOOP_HOME/evals/<candidate>.png)")] = None,
    traffic: Annotated[str | None, typer.Option(help="also show this alias's live arms from the log")] = None,
    hours: Annotated[float, typer.Option(help="window for --traffic")] = 24.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Evaluate a candidate against live: task checks, chrF to the reference, optional judge."""
    import time

    from adapters.evaluation import checks, report
    from adapters.evaluation import data as data_mod
    from adapters.evaluation.runner import evaluate
    from adapters.registry.workspace import open_workspace

    if (data is None) == (dataset is None):
        raise typer.BadParameter("give exactly one of --data or --dataset")
    ws = open_workspace(config, database_url, gateway_url=base_url)
    examples = (data_mod.load_file(data, limit) if data else data_mod.load_dataset(ws.engine, dataset or "", limit))
    run_checks = [checks.parse(c) for c in check or []]
    result = evaluate(ws.gateway_url, {"live": live, "candidate": candidate}, examples, run_checks=run_checks,
                      max_tokens=max_tokens, judge_model=judge, api_key=ws.api_key)
    png = report.plot(result, plot or ws.home / "evals" / f"{candidate.replace('/', '_')}.png")
    rec = report.record(result, dataset or str(data), png)
    stored = report.store(ws.engine, candidate, rec)
    out: dict[str, Any] = {"eval": rec, "stored_with": stored}
    arms: dict[str, dict[str, Any]] = {}
    if traffic:
        from gateway.store.canary import arm_stats

        out["traffic"] = arms = arm_stats(ws.engine, traffic, time.time() - hours * 3600)
    if as_json:
        sys.stdout.write(json.dumps(out, default=str) + "\n")
        return
    typer.echo(report.table(result))
    if traffic:
        typer.echo(f"\nlive traffic on {traffic} (last {hours:g} h, from the log):")
        typer.echo(report.traffic_table(arms))
    typer.echo(f"plot: {png}" + (f"; stored with adapter {stored}" if stored else ""))
