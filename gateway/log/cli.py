"""``tuneloop log``: the interaction log's maintenance commands (retention)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` (or plain seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise typer.BadParameter(f"{text!r}: use a number with a unit s, m, h, d or w (e.g. 30d)")
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


@app.command()
def prune(
    older_than: Annotated[str, typer.Option("--older-than", help="age, e.g. 30d, 12h, 90m")],
    project: Annotated[str | None, typer.Option(help="only this project's interactions")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (or $TUNELOOP_CONFIG)")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Delete interactions older than an age, with their feedback."""
    from gateway.cli import resolve
    from gateway.log.retention import prune as prune_log

    seconds = parse_age(older_than)
    _, _, url = resolve(config, database_url)
    n = prune_log(url, seconds, project)
    typer.echo(f"deleted {n} interactions older than {older_than}" + (f" in project {project}" if project else ""))
