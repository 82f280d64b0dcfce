"""``tuneloop keys``: create, list and revoke API keys (stored hashed; shown once)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.log.cli import parse_age

if TYPE_CHECKING:
    from gateway.store.keys import KeyStore

app = typer.Typer(no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config")]


def _store(config: Path | None) -> KeyStore:
    from gateway.cli import load_settings
    from gateway.settings import database_url
    from gateway.store import db
    from gateway.store.keys import KeyStore

    settings, cfg = load_settings(config)
    engine = db.create_engine(database_url(settings, cfg))
    db.upgrade(engine)
    return KeyStore(engine)


@app.command()
def create(
    project: Annotated[str, typer.Option(help="the project the key's traffic and data belong to")],
    admin: Annotated[bool, typer.Option("--admin", help="may reach admin endpoints")] = False,
    name: Annotated[str | None, typer.Option(help="a label")] = None,
    rpm: Annotated[float | None, typer.Option(help="requests per minute")] = None,
    tpm: Annotated[float | None, typer.Option(help="tokens per minute")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="cap on max_tokens per request")] = None,
    usd_per_day: Annotated[float | None, typer.Option(help="daily budget in USD")] = None,
    usd_per_month: Annotated[float | None, typer.Option(help="monthly budget in USD")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="requests in flight at once")] = None,
    expires_in: Annotated[str | None, typer.Option(help="the key expires after this long, e.g. 90d")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key. The last line printed is the key itself; it is not stored anywhere."""
    limits = {k: v for k, v in dict(rpm=rpm, tpm=tpm, max_tokens=max_tokens, usd_per_day=usd_per_day,
                                    usd_per_month=usd_per_month, max_concurrency=max_concurrency).items()
              if v is not None}
    if usd_per_day is not None or usd_per_month is not None:
        _check_budget_enforceable(config)
    store = _store(config)
    first = not store.any()
    key, secret = store.create(project, name=name, admin=admin, limits=limits,
                               expires_in_s=parse_age(expires_in) if expires_in else None)
    if first:
        typer.echo("this is the first API key: from now on every request to the gateway needs a key "
                   "(auth: auto), within a second", err=True)
    typer.echo(f"created {key['id']} for project {project!r}{' (admin)' if admin else ''}; "
               "copy the key now, it is shown only once:", err=True)
    typer.echo(secret)


def _check_budget_enforceable(config: Path | None) -> None:
    """A USD budget holds only where a price is known: refuse when no target is priced and there
    are no ``default_prices``; warn about the models whose requests such a key will be refused."""
    from gateway.cli import load_settings

    cfg = load_settings(config)[1]
    if cfg.default_prices:
        return
    unpriced = sorted(n for n, t in cfg.targets.items() if not t.prices)
    if len(unpriced) == len(cfg.targets):
        typer.echo("refused: no target in the config has `prices` and there are no `default_prices`, "
                   "so a USD budget could not be enforced (every request of this key would be 403). "
                   "Add prices to the config first.", err=True)
        raise typer.Exit(2)
    models = sorted(m for m, mc in cfg.models.items() if any(r.target in unpriced for r in mc.routes))
    if models:
        typer.echo(f"warning: targets {', '.join(unpriced)} have no prices: this key's requests to "
                   f"{', '.join(models)} will be refused (403) until they do, or `default_prices` is set.",
                   err=True)


@app.command("list")
def list_(project: Annotated[str | None, typer.Option()] = None, config: ConfigOpt = None) -> None:
    """List keys (never their secrets)."""
    for k in _store(config).list(project):
        state = "revoked" if k["revoked"] else "expired" if k["expires"] and k["expires"] <= time.time() else "live"
        typer.echo(f"{k['id']}  {k['prefix']}…  {k['project']:<20} {state:<8}"
                   f"{' admin' if k['admin'] else ''}  {k['limits'] or ''}")


@app.command()
def rotate(key_id: str, grace: Annotated[str, typer.Option(help="how long the old key stays valid")] = "24h",
           config: ConfigOpt = None) -> None:
    """A new key with the same project and limits; the old one expires after the grace period. The last
    line printed is the new key."""
    made = _store(config).rotate(key_id, parse_age(grace))
    if made is None:
        typer.echo(f"no live key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"created {made[0]['id']}; {key_id} stays valid for {grace}; copy the new key now:", err=True)
    typer.echo(made[1])


@app.command()
def revoke(key_id: str, config: ConfigOpt = None) -> None:
    """Revoke a key (every replica stops accepting it within a second)."""
    if not _store(config).revoke(key_id):
        typer.echo(f"no live key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
