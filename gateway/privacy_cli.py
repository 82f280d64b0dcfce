"""``tuneloop forget --user ID`` (erase one end user's interactions) and ``tuneloop audit`` (the audit trail)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config")]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="default: as tuneloop serve finds it")]


def _engine(config: Path | None, database_url: str | None) -> Any:
    from gateway.cli import resolve
    from gateway.store import db

    _, _, url = resolve(config, database_url)
    engine = db.create_engine(url)
    db.upgrade(engine)
    return engine


def forget(
    user: Annotated[str, typer.Option("--user", help="the `user` the requests named")],
    project: Annotated[str | None, typer.Option(help="only this project's interactions")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    config: ConfigOpt = None, database_url: DbOpt = None,
) -> None:
    """Erase every interaction of one end user (and its feedback); datasets built from them are marked stale."""
    from gateway.store.audit import cli_actor
    from gateway.store.forget import forget_user

    if not yes:
        typer.confirm(f"Erase every interaction whose request names user {user!r}? This cannot be undone",
                      abort=True)
    out = forget_user(_engine(config, database_url), user, cli_actor(), project)
    typer.echo(json.dumps(out, indent=2))
    if out["datasets_stale"]:
        typer.echo(f"{len(out['datasets_stale'])} dataset(s) hold lines from this user: rebuild them "
                   "(tuneloop dataset build) and delete the old files.", err=True)


def audit(
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
    action: Annotated[str | None, typer.Option(help="e.g. key.create, user.forget, adapter.promote")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None, database_url: DbOpt = None,
) -> None:
    """The audit trail: keys created and revoked, promotions and rollbacks, deletions and forgets."""
    from gateway.store.audit import AuditStore

    rows = AuditStore(_engine(config, database_url)).list(limit, action)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        when = datetime.fromtimestamp(r["created"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        detail = json.dumps(r["detail"]) if r["detail"] else ""
        typer.echo(f"{when}  {r['actor']:<20} {r['action']:<18} {r['target'] or '':<32} {detail}")
