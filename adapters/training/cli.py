"""``tuneloop finetune`` and ``tuneloop jobs list|show|cancel``.

``finetune`` stores the training file like ``POST /v1/files`` does, creates the job and
starts its worker; with ``--wait`` it follows the job's events (a progress bar over the
steps) until it ends, and exits non-zero unless it succeeded. Heavy imports stay in the
worker: these commands never load torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True)
DbOpt = Annotated[str | None, typer.Option(help="database URL (default: TUNELOOP_DATABASE_URL or the home's SQLite)")]


def _open(database_url: str | None) -> tuple[Any, str, Path]:
    from gateway.log import db
    from gateway.settings import Settings

    settings = Settings()
    home = settings.resolved_home().resolve()
    url = database_url or settings.database_url or db.default_database_url(home)
    engine = db.create_engine(url)
    db.upgrade(engine)
    return engine, url, home


def finetune(
    model: Annotated[str, typer.Option(help="base model: smollm2-135m-instruct (local) or an OpenAI model")],
    training_file: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="JSONL file")],
    method: Annotated[str, typer.Option(help="sft | dpo")] = "sft",
    validation_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    suffix: str | None = None,
    epochs: Annotated[int | None, typer.Option(help="n_epochs (default auto)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning_rate_multiplier (default auto)")] = None,
    batch_size: int | None = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (local only)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="cap on steps (local only)")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per example (local only)")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="steps between checkpoints (local)")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    database_url: DbOpt = None,
) -> None:
    """Fine-tune a model on a JSONL file: a local LoRA adapter or an OpenAI fine-tuning job."""
    from adapters.training.service import JobError, create_job, store_file

    engine, url, home = _open(database_url)
    hp = {k: v for k, v in {"n_epochs": epochs, "learning_rate_multiplier": lr, "batch_size": batch_size,
                            "beta": beta, "lora_r": lora_r, "max_steps": max_steps, "max_length": max_length,
                            "checkpoint_every": checkpoint_every}.items() if v is not None}
    kind = {"sft": "supervised", "supervised": "supervised", "dpo": "dpo"}.get(method)
    if kind is None:
        raise typer.BadParameter("--method must be sft or dpo")
    try:
        ids = {}
        for key, path in (("training", training_file), ("validation", validation_file)):
            if path is not None:
                ids[key] = store_file(engine, home, path.name, path.read_bytes(), "fine-tune")["id"]
        job = create_job(engine, home, url, model=model, training_file=ids["training"],
                         validation_file=ids.get("validation"), suffix=suffix,
                         method={"type": kind, kind: {"hyperparameters": hp}})
    except JobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{job['id']} {job['status']} ({job['backend']})")
    if wait:
        raise typer.Exit(_follow(engine, job["id"]))


def _follow(engine: Any, job_id: str) -> int:
    """Print events as they arrive and show a bar over the steps; 0 if the job succeeded."""
    from tqdm import tqdm

    from gateway.log.jobs import TERMINAL, JobStore

    store, seen, bar = JobStore(engine), set(), None
    while True:
        job = store.get(job_id) or {}
        events, _ = store.events(job_id, limit=200)
        for ev in reversed(events):
            if ev["id"] in seen:
                continue
            seen.add(ev["id"])
            data = ev.get("data") or {}
            if ev["type"] == "metrics" and bar is not None:
                bar.n = int(data.get("step", bar.n))
                bar.set_postfix(loss=f"{data.get('train_loss', 0):.4f}", tok_s=f"{data.get('tokens_per_s', 0):.0f}")
                bar.refresh()
            else:
                tqdm.write(f"[{ev['level']}] {ev['message']}")
                if "steps" in data and bar is None:
                    bar = tqdm(total=int(data["steps"]), unit="step")
        if job.get("status") in TERMINAL:
            if bar is not None:
                bar.close()
            typer.echo(f"{job_id} {job['status']} {job.get('fine_tuned_model') or ''}".rstrip())
            return 0 if job["status"] == "succeeded" else 1
        time.sleep(1.0)


@app.command("list")
def list_jobs(limit: int = 20, database_url: DbOpt = None) -> None:
    """Newest jobs first."""
    from gateway.log.jobs import JobStore

    rows, _ = JobStore(_open(database_url)[0]).list(limit=limit)
    for r in rows:
        kind = (r.get("method") or {}).get("type", "supervised")
        typer.echo(f"{r['id']}  {r['status']:<16} {r['backend']:<6} {kind:<10} {r['model']}  "
                   f"{r.get('fine_tuned_model') or '-'}")


@app.command()
def show(job_id: str, events: int = 10, database_url: DbOpt = None) -> None:
    """A job as OpenAI's ``fine_tuning.job`` object, and its latest events."""
    from adapters.training.wire import event_object, job_object
    from gateway.log.jobs import JobStore

    store = JobStore(_open(database_url)[0])
    row = store.get(job_id)
    if row is None:
        typer.echo(f"no job {job_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(job_object(row), indent=2))
    for ev in reversed(store.events(job_id, limit=events)[0]):
        e = event_object(ev)
        typer.echo(f"{time.strftime('%H:%M:%S', time.localtime(e['created_at']))} [{e['level']}] {e['message']}")


@app.command()
def cancel(job_id: str, database_url: DbOpt = None) -> None:
    """Cancel a job; a running worker stops between two steps and publishes nothing."""
    from adapters.training.service import JobFinished, JobNotFound, cancel_job

    try:
        job = cancel_job(_open(database_url)[0], job_id)
    except JobNotFound as exc:
        typer.echo(f"no job {job_id}", err=True)
        raise typer.Exit(1) from exc
    except JobFinished as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{job_id} {job['status']}")


@app.command()
def resume(job_id: str, database_url: DbOpt = None) -> None:
    """Start a new worker for a job whose worker died; training continues from its newest checkpoint."""
    from adapters.training.service import start_worker
    from gateway.log.jobs import TERMINAL, JobStore

    engine, url, home = _open(database_url)
    row = JobStore(engine).get(job_id)
    if row is None or row["status"] in TERMINAL:
        typer.echo(f"no unfinished job {job_id}", err=True)
        raise typer.Exit(1)
    if row.get("worker_pid") and _alive(int(row["worker_pid"])):
        typer.echo(f"worker {row['worker_pid']} is still running", err=True)
        raise typer.Exit(1)
    proc = start_worker(engine, job_id, url, home)
    typer.echo(f"{job_id} resumed by worker {proc.pid}")


def _alive(pid: int) -> bool:
    from adapters.training.service import worker_alive

    return worker_alive(pid)
