"""``tuneloop loop`` and ``tuneloop migrate``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="gateway YAML (or $TUNELOOP_CONFIG)")]
GatewayOpt = Annotated[str | None, typer.Option(
    "--base-url", help="the gateway (default $TUNELOOP_GATEWAY_URL or :8000)")]


def loop(
    model: Annotated[str, typer.Option("--model", help="the alias to improve")],
    once: Annotated[bool, typer.Option(help="run (or resume) one cycle and exit")] = False,
    force: Annotated[bool, typer.Option(help="start a cycle even below min_feedback")] = False,
    interval: Annotated[float, typer.Option(help="seconds between checks when looping")] = 60.0,
    config: ConfigOpt = None, base_url: GatewayOpt = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """When enough new feedback has arrived: dataset, LoRA, eval, gate, canary, promote (resumable)."""
    from adapters.loop import config as loop_cfg
    from adapters.loop.controller import due, run_cycle
    from adapters.registry.workspace import open_workspace

    ws = open_workspace(config, database_url, gateway_url=base_url)
    cfg = loop_cfg.load(ws.config, model)
    while True:
        cycle = run_cycle(ws, model, cfg, force=force, progress=not as_json)
        if cycle is None:
            _, n = due(ws, model, cfg)
            typer.echo(f"{model}: {n}/{cfg.min_feedback} new feedback; waiting", err=as_json)
        elif as_json:
            sys.stdout.write(json.dumps(cycle, default=str) + "\n")
        else:
            typer.echo(f"cycle {cycle['id']}: {cycle['status']} (last stage {cycle['stage']!r})")
        if once:
            raise typer.Exit(0 if cycle is None or cycle["status"] in ("done", "rejected", "rolled_back") else 1)
        force = False
        time.sleep(interval)


def migrate(
    from_: Annotated[str, typer.Option("--from", help="the alias served by an ft: model")],
    to: Annotated[str, typer.Option("--to", help="the local base model to train on")] = "smollm2-135m-instruct",
    target: Annotated[str | None, typer.Option(help="vLLM target for the adapter (default: the first)")] = None,
    min_pairs: Annotated[int, typer.Option(help="shadowed requests before deciding")] = 20,
    min_agreement: Annotated[float, typer.Option(help="mean chrF between primary and shadow replies")] = 0.5,
    wait: Annotated[float, typer.Option(help="seconds to wait for shadow traffic per run")] = 0.0,
    config: ConfigOpt = None, base_url: GatewayOpt = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Move an alias off an OpenAI fine-tune: train a local adapter on its traffic, shadow, cut over."""
    from adapters.loop import config as loop_cfg
    from adapters.loop.migrate import MigrateSettings, retirement, run_migration
    from adapters.registry.workspace import open_workspace

    ws = open_workspace(config, database_url, gateway_url=base_url)
    cfg = loop_cfg.load(ws.config, from_)
    cfg.base_model = to
    cfg.dataset.has_correction = False
    ms = MigrateSettings(target=target, min_pairs=min_pairs, min_agreement=min_agreement, wait_s=wait)
    retiring = retirement(ws, from_)
    if retiring:
        typer.echo(retiring["line"])
    cycle = run_migration(ws, from_, cfg, ms)
    summary = {k: cycle[k] for k in ("id", "status", "stage", "error")}
    summary["shutdown_date"] = retiring["shutdown_date"] if retiring else None
    typer.echo(json.dumps(summary, default=str))
    for line in (cycle.get("state") or {}).get("report_lines", []):
        typer.echo(line)
