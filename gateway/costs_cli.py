"""``tuneloop costs``: USD and tokens by model, project and day, from the interaction log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

GROUPS = ("day", "model", "project")


def costs(
    days: Annotated[int, typer.Option(help="how many days back (UTC)")] = 30,
    project: Annotated[str | None, typer.Option(help="only this project")] = None,
    by: Annotated[str, typer.Option(help="comma-separated: day, model, project")] = "day,model,project",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
) -> None:
    """Cost per model, project and day (shadow traffic included)."""
    from gateway.cli import resolve
    from gateway.store import db
    from gateway.store.costs import cost_report

    keys = tuple(k.strip() for k in by.split(",") if k.strip())
    if not keys or any(k not in GROUPS for k in keys):
        raise typer.BadParameter(f"--by takes a comma-separated subset of {', '.join(GROUPS)}")
    engine = db.create_engine(resolve(config)[2])
    db.upgrade(engine)
    rows = cost_report(engine, since=time.time() - days * 86_400, project=project, by=keys)
    for row in rows:
        if "day" in row:
            row["day"] = datetime.fromtimestamp(row["day"] * 86_400, UTC).strftime("%Y-%m-%d")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    cols = [*keys, "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd"]
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) if rows else len(c) for c in cols}
    typer.echo("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        typer.echo("  ".join(_fmt(r[c]).ljust(widths[c]) for c in cols))
    total = sum(r["cost_usd"] for r in rows)
    typer.echo(f"total: ${total:.6f} over {sum(r['requests'] for r in rows)} requests")


def _fmt(value: object) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)
