"""``tuneloop dataset``: build, validate, import, list, show.

Heavy imports (SQLAlchemy engine, tqdm, transformers) stay inside the commands so
``tuneloop --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)

DbOpt = Annotated[str | None, typer.Option(
    "--database-url", help="Default: $TUNELOOP_DATABASE_URL, the config's, the home's SQLite.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="gateway YAML (or $TUNELOOP_CONFIG)")]
BaseOpt = Annotated[str, typer.Option("--base-model", help="Target base model for token counts.")]


def _engine(database_url: str | None, config: Path | None = None) -> Any:
    """The database every command finds the same way (see ``gateway.cli.resolve``)."""
    from gateway.cli import resolve
    from gateway.store import db

    engine = db.create_engine(resolve(config, database_url)[2])
    db.upgrade(engine)
    return engine


def _dump(obj: Any) -> None:
    import orjson

    opts = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    sys.stdout.write(orjson.dumps(obj, option=opts, default=str).decode() + "\n")


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Train file (JSONL).")],
    fmt: Annotated[str, typer.Option("--format", help="sft, dpo (chat completions) or prompt_completion "
                                     "(legacy text completions).")] = "sft",
    val_out: Annotated[Path | None, typer.Option(help="Default: OUT.val.jsonl.")] = None,
    val_fraction: float = 0.1,
    model: Annotated[str | None, typer.Option(help="Requested model (alias).")] = None,
    adapter: Annotated[str | None, typer.Option(help="Upstream model / adapter.")] = None,
    project: str | None = None,
    since: Annotated[str | None, typer.Option(help="Unix s, ISO 8601 or 7d/12h.")] = None,
    until: str | None = None,
    metadata: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
    min_rating: Annotated[float | None, typer.Option(help="Newest rating, in [-1, 1].")] = None,
    has_correction: bool = False,
    status_ok: Annotated[bool, typer.Option("--status-ok/--any-status")] = True,
    scrub: Annotated[bool, typer.Option("--scrub/--no-scrub")] = True,
    dedupe: Annotated[bool, typer.Option("--dedupe/--no-dedupe")] = True,
    name: str | None = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Build an SFT, DPO or prompt-completion set from the log and record it in the datasets table."""
    from adapters.datasets.build import BuildOptions
    from adapters.datasets.build import build as run_build
    from adapters.datasets.filters import make_filters

    if fmt not in ("sft", "dpo", "prompt_completion"):
        raise typer.BadParameter("--format must be sft, dpo or prompt_completion")
    try:
        filters = make_filters(model=model, adapter=adapter, project=project, since=since,
                               until=until, metadata=metadata, min_rating=min_rating,
                               has_correction=has_correction, status_ok=status_ok)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    opts = BuildOptions(fmt=fmt, out=out, val_out=val_out, val_fraction=val_fraction,
                        filters=filters, scrub=scrub, dedupe=dedupe, name=name,
                        progress=progress)
    rep = run_build(_engine(database_url, config), opts)
    if as_json:
        _dump(rep)
        return
    typer.echo(f"{rep['dataset_id']}: {rep['format']} read {rep['read']}, "
               f"train {rep['written']['train']} -> {rep['path']}, "
               f"val {rep['written']['val']} -> {rep['val_path']}")
    typer.echo(f"dropped: {rep['dropped'] or 'none'}; scrubbed: {rep['scrubbed'] or 'none'}")


@app.command()
def validate(
    file: Path,
    fmt: Annotated[str | None, typer.Option("--format", help="sft|dpo|prompt_completion; default: per line.")] = None,
    base_model: BaseOpt = "smollm2-135m-instruct",
    epochs: int = 3,
    price_per_1m: Annotated[float | None, typer.Option(help="Override the price.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a JSONL file against OpenAI's fine-tuning format; exit 1 on any bad line."""
    from adapters.datasets.report import render, validate_file

    if not file.exists():
        raise typer.BadParameter(f"{file} does not exist")
    try:
        rep = validate_file(file, fmt, base_model, epochs, price_per_1m)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0])) from exc
    if as_json:
        _dump(rep)
    else:
        typer.echo(render(rep))
    raise typer.Exit(1 if rep["bad"] or rep["lines"] == 0 else 0)


@app.command("import")
def import_(
    file: Path,
    fmt: Annotated[str | None, typer.Option("--format", help="sft|dpo|prompt_completion; default: detected.")] = None,
    base_model: BaseOpt = "smollm2-135m-instruct",
    name: str | None = None,
    project: str | None = None,
    database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Validate an external JSONL and record it as a dataset (refused if any line is bad)."""
    import orjson

    from adapters.datasets.report import render, validate_file
    from adapters.datasets.validate import detect_format
    from gateway.store.datasets import DatasetRow, DatasetStore, new_dataset_id

    rep = validate_file(file, fmt, base_model)
    if rep["bad"] or rep["lines"] == 0:
        typer.echo(render(rep), err=True)
        raise typer.Exit(1)
    with open(file, "rb") as f:
        first = orjson.loads(f.readline())
        f.seek(0)
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    row = DatasetRow(id=new_dataset_id(), name=name or file.name, kind=fmt or detect_format(first),
                     path=str(file.resolve()), rows=rep["valid"], sha256=sha, source="import",
                     project=project, report=rep, counts={"lines": rep["lines"]})
    DatasetStore(_engine(database_url, config)).create(row)
    typer.echo(row.id)


@app.command("list")
def list_(limit: int = 50, as_json: Annotated[bool, typer.Option("--json")] = False,
          database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """Recorded datasets, newest first."""
    from gateway.store.datasets import DatasetStore

    rows = DatasetStore(_engine(database_url, config)).list(limit)
    if as_json:
        _dump(rows)
        return
    for r in rows:
        typer.echo(f"{r['id']}  {r['kind']:3}  {r['source'] or '':6}  rows={r['rows']:<8} "
                   f"val={r['val_rows'] or 0:<6} {r['path']}")


@app.command()
def show(dataset_id: str, ids: Annotated[bool, typer.Option(help="Print source ids.")] = False,
         database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """One dataset: its filters, counts, hashes, report (and source ids with --ids)."""
    from gateway.store.datasets import DatasetStore

    store = DatasetStore(_engine(database_url, config))
    row = store.get(dataset_id)
    if row is None:
        typer.echo(f"no dataset {dataset_id}", err=True)
        raise typer.Exit(1)
    if ids:
        row["source_ids"] = store.source_ids(dataset_id)
    _dump(row)
