"""``tuneloop adapters list|show``, ``tuneloop promote`` and ``tuneloop rollback``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="gateway YAML (or $TUNELOOP_CONFIG)")]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="default: as `tuneloop serve` resolves it")]
GatewayOpt = Annotated[str | None, typer.Option(
    "--base-url", help="gateway to wait for (default $TUNELOOP_GATEWAY_URL or :8000)")]


def _ws(config: Path | None, database_url: str | None, base_url: str | None = None) -> Any:
    from adapters.registry.workspace import open_workspace

    return open_workspace(config, database_url, gateway_url=base_url)


def _score(metrics: dict[str, Any] | None) -> str:
    ev = (metrics or {}).get("eval") or {}
    cand = (ev.get("candidate") or {}).get("score")
    return f"{cand:.3f}" if isinstance(cand, (int, float)) else "-"


@app.command("list")
def list_adapters(status: Annotated[str | None, typer.Option(help="candidate|canary|live|retired")] = None,
                  limit: int = 50, as_json: Annotated[bool, typer.Option("--json")] = False,
                  config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Adapter versions, newest first, with their state and eval score."""
    from gateway.store.registry import AdapterRegistry

    rows = AdapterRegistry(_ws(config, database_url).engine).list(status, limit)
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return
    typer.echo(f"{'name':<52} {'ver':>3} {'status':<9} {'eval':>6}  created")
    for r in rows:
        when = datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M")
        typer.echo(f"{r['name']:<52} {r['version']:>3} {r['status']:<9} {_score(r['metrics']):>6}  {when}")


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="adapter id, name or name:version")],
         config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """One adapter with its lineage: dataset -> job -> adapter -> evaluation."""
    from gateway.store.registry import AdapterRegistry

    reg = AdapterRegistry(_ws(config, database_url).engine)
    adapter = reg.get(ref)
    if adapter is None:
        typer.echo(f"no adapter {ref!r}", err=True)
        raise typer.Exit(1)
    sys.stdout.write(json.dumps(reg.lineage(adapter["id"]), default=str, indent=2) + "\n")


def promote(
    name: Annotated[str, typer.Argument(help="adapter id, name or name:version")],
    model: Annotated[str, typer.Option("--model", help="the alias to route to it")],
    canary: Annotated[float | None, typer.Option(help="percent of traffic for a canary (default: all)")] = None,
    config: ConfigOpt = None, database_url: DbOpt = None, base_url: GatewayOpt = None,
) -> None:
    """Hot-load an adapter into the alias's engines and shift its route weights (canary or full)."""
    from adapters.registry.promote import PromotionError
    from adapters.registry.promote import promote as do_promote
    from adapters.registry.routes import RouteError

    try:
        out = do_promote(_ws(config, database_url, base_url), name, model, canary)
    except (PromotionError, RouteError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for h in out["hot_load"]:
        typer.echo(f"  {h['base_url']}: {h['outcome']}")
    shares = ", ".join(f"{r['model']} {r['weight']:g}%" for r in out["routes"])
    typer.echo(f"{out['action']}: {model} -> {shares}"
               + (" (gateway updated)" if out["gateway_applied"] else " (replicas follow within ~2 s)"))


def rollback(
    model: Annotated[str, typer.Argument(help="the alias")],
    config: ConfigOpt = None, database_url: DbOpt = None, base_url: GatewayOpt = None,
) -> None:
    """Restore the alias's previous live version in one step."""
    from adapters.registry.promote import PromotionError
    from adapters.registry.promote import rollback as do_rollback

    try:
        out = do_rollback(_ws(config, database_url, base_url), model)
    except PromotionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    shares = ", ".join(f"{r['model']} {r.get('weight', 1):g}" for r in out["restored"])
    typer.echo(f"rolled back {model}: now {shares}")
