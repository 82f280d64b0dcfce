"""``tuneloop finetune`` and ``tuneloop jobs list|show|cancel|resume|runner``.

``finetune`` stores the training file like ``POST /v1/files`` does (or names a dataset
built by ``tuneloop dataset build``: ``--dataset ID``), creates the job and starts its
worker; with ``--wait`` it follows the job's events (a progress bar over the steps) until
it ends, and exits non-zero unless it succeeded. ``--in-process`` trains in this process
instead (a Kubernetes Job, ``torchrun``: see ``inprocess.py``). ``--model`` (alias
``--base-model``) is a base of the catalog (the config's ``base_models`` and the embedded
SmolLM2), a local checkpoint folder, a Hugging Face id, or an OpenAI model. ``jobs runner``
starts the workers of the jobs the API queued (``runner.py``; ``tuneloop serve`` runs one
as a child process). Heavy imports stay in the worker: without ``--in-process`` these
commands never load torch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True)
DbOpt = Annotated[str | None, typer.Option(
    help="database URL (default: $TUNELOOP_DATABASE_URL, the config's, the home's SQLite)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="gateway YAML (or $TUNELOOP_CONFIG)")]


def _open(database_url: str | None, config: Path | None = None, migrate: bool = True) -> tuple[Any, str, Path, Any]:
    from gateway.cli import resolve
    from gateway.store import db

    settings, cfg, url = resolve(config, database_url)
    engine = db.create_engine(url)
    if migrate:
        db.upgrade(engine)
    return engine, url, settings.resolved_home().resolve(), cfg


def finetune(
    model: Annotated[str, typer.Option("--model", "--base-model",
                                       help="a base of the catalog, a checkpoint folder, a HF id, or an OpenAI model")],
    training_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="JSONL file")] = None,
    dataset: Annotated[str | None, typer.Option(help="a dataset id (tuneloop dataset list) or a JSONL file")] = None,
    method: Annotated[str | None, typer.Option(help="sft | dpo (default: the dataset's kind, else sft)")] = None,
    validation_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    suffix: str | None = None,
    epochs: Annotated[int | None, typer.Option(help="n_epochs (default auto)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning_rate_multiplier (default auto)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="global batch (default: by the base's size)")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (local only)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="cap on steps (local only)")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per example (local only)")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="steps between checkpoints (local)")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(help="examples per forward pass and rank (local)")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(help="default: on for 1B+ bases on GPU")] = None,
    qlora: Annotated[bool, typer.Option(help="4-bit base (CUDA + bitsandbytes)")] = False,
    seed: Annotated[int | None, typer.Option(help="default: random")] = None,
    output: Annotated[Path | None, typer.Option(help="the adapter's folder; its name is the model's")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (local)")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="across torchrun ranks: ddp (a whole base per rank, default) | fsdp (base sharded over ranks)")] = None,
    in_process: Annotated[bool, typer.Option(help="train here, not in a detached worker (Jobs, torchrun)")] = False,
    wait: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="gateway YAML (or $TUNELOOP_CONFIG)")] = None,
    database_url: DbOpt = None,
) -> None:
    """Fine-tune a model on a JSONL file or a dataset: a local LoRA adapter or an OpenAI fine-tuning job."""
    if device not in (None, "auto", "cpu", "cuda"):
        raise typer.BadParameter("--device must be auto, cpu or cuda")
    if strategy not in (None, "ddp", "fsdp"):
        raise typer.BadParameter("--strategy must be ddp or fsdp")
    hp = {k: v for k, v in {"n_epochs": epochs, "learning_rate_multiplier": lr, "batch_size": batch_size,
                            "beta": beta, "lora_r": lora_r, "max_steps": max_steps, "max_length": max_length,
                            "checkpoint_every": checkpoint_every, "micro_batch_size": micro_batch_size,
                            "gradient_checkpointing": gradient_checkpointing,
                            "qlora": qlora or None}.items() if v is not None}
    if training_file is None and dataset is None:
        raise typer.BadParameter("give --training-file or --dataset")
    opts = {"model": model, "training_file": training_file, "dataset": dataset, "method": method,
            "validation_file": validation_file, "suffix": suffix, "hp": hp, "seed": seed, "output": output,
            "device": device, "strategy": strategy}
    if in_process:
        from adapters.training import inprocess

        rank0 = os.environ.get("RANK", "0") == "0"
        engine, url, home, cfg = _open(database_url, config, migrate=rank0)
        code = inprocess.run(lambda: _create(engine, url, home, cfg, opts, start=False), url, home, device)
        raise typer.Exit(code)
    engine, url, home, cfg = _open(database_url, config)
    from gateway.job_queue import JobError

    try:
        job = _create(engine, url, home, cfg, opts, start=True)
    except JobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{job['id']} {job['status']} ({job['backend']})")
    if wait:
        raise typer.Exit(_follow(engine, job["id"]))


def _create(engine: Any, url: str, home: Path, cfg: Any, o: dict[str, Any], start: bool) -> dict[str, Any]:
    """Store the files (or find the dataset) and create the job; raises ``JobError``."""
    from adapters.training.service import create_job
    from gateway.job_queue import JobError
    from gateway.store.datasets import DatasetStore
    from gateway.store.files import store_file

    dataset_id, train_path = None, o["training_file"]
    if o["dataset"] is not None:
        if Path(o["dataset"]).is_file():
            train_path = Path(o["dataset"])
        else:
            row = DatasetStore(engine).get(o["dataset"])
            if row is None:
                raise JobError(f"no dataset {o['dataset']!r} and no such file", "dataset")
            dataset_id, default_kind = o["dataset"], row["kind"]
    kind = {"sft": "supervised", "supervised": "supervised", "dpo": "dpo", None: None}.get(o["method"], "bad")
    if kind == "bad":
        raise JobError("--method must be sft or dpo", "method")
    kind = kind or ("dpo" if dataset_id and default_kind == "dpo" else "supervised")
    ids = {}
    for key, path in (("training", train_path), ("validation", o["validation_file"])):
        if path is not None:
            ids[key] = store_file(engine, home, path.name, path.read_bytes(), "fine-tune")["id"]
    return create_job(engine, home, url, model=o["model"], training_file=ids.get("training"),
                      validation_file=ids.get("validation"), suffix=o["suffix"], seed=o["seed"],
                      method={"type": kind, kind: {"hyperparameters": o["hp"]}}, config=cfg, allow_paths=True,
                      dataset_id=dataset_id, output=o["output"], device=o["device"],
                      strategy=o["strategy"], start=start)


def _follow(engine: Any, job_id: str) -> int:
    """Print events as they arrive and show a bar over the steps; 0 if the job succeeded."""
    from tqdm import tqdm

    from gateway.store.jobs import TERMINAL, JobStore

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
def list_jobs(limit: int = 20, database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """Newest jobs first."""
    from gateway.store.jobs import JobStore

    rows, _ = JobStore(_open(database_url, config)[0]).list(limit=limit)
    for r in rows:
        kind = (r.get("method") or {}).get("type", "supervised")
        typer.echo(f"{r['id']}  {r['status']:<16} {r['backend']:<6} {kind:<10} {r['model']}  "
                   f"{r.get('fine_tuned_model') or '-'}")


@app.command()
def show(job_id: str, events: int = 10, database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """A job as OpenAI's ``fine_tuning.job`` object, and its latest events."""
    from gateway.api.fine_tuning_wire import event_object, job_object
    from gateway.store.jobs import JobStore

    store = JobStore(_open(database_url, config)[0])
    row = store.get(job_id)
    if row is None:
        typer.echo(f"no job {job_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(job_object(row), indent=2))
    for ev in reversed(store.events(job_id, limit=events)[0]):
        e = event_object(ev)
        typer.echo(f"{time.strftime('%H:%M:%S', time.localtime(e['created_at']))} [{e['level']}] {e['message']}")


@app.command()
def cancel(job_id: str, database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """Cancel a job; a running worker stops between two steps and publishes nothing."""
    from gateway.job_queue import JobFinished, JobNotFound, cancel_job

    try:
        job = cancel_job(_open(database_url, config)[0], job_id)
    except JobNotFound as exc:
        typer.echo(f"no job {job_id}", err=True)
        raise typer.Exit(1) from exc
    except JobFinished as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{job_id} {job['status']}")


@app.command()
def resume(job_id: str, database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """Start a new worker for a job whose worker died; training continues from its newest checkpoint."""
    from adapters.training.service import start_worker
    from gateway.store.jobs import TERMINAL, JobStore

    engine, url, home, _ = _open(database_url, config)
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


@app.command()
def runner(resume: Annotated[bool, typer.Option(help="first restart the workers of orphaned local jobs")] = False,
           interval: Annotated[float, typer.Option(help="seconds between two looks at the queue")] = 0.5,
           database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """Start a worker for every job the API queues (what ``tuneloop serve`` runs as a child), until stopped."""
    from adapters.training.runner import run

    engine, url, home, _ = _open(database_url, config)
    engine.dispose()
    run(url, home, resume, interval)
