"""``tuneloop finetune --in-process``: create the job and train it in this process (no detached worker).

For a Kubernetes Job (the container's process is the training) and for ``torchrun``, which
starts one process per rank::

    torchrun --nproc-per-node 8 -m gateway.cli finetune --model qwen-support --dataset ds-... --in-process

Rank 0 migrates the database, stores the file and creates the job, then hands the job id
to the other ranks; every rank trains (``local.run_job``); rank 0 alone writes rows,
checkpoints and the adapter. Returns the exit status: 0 when the job succeeded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def run(create: Callable[[], dict[str, Any]], database_url: str, home: Path, device: str | None) -> int:
    """``create`` makes the job (rank 0 only; it may raise ``JobError``)."""
    from adapters.training import dist
    from adapters.training.local import run_job
    from gateway.job_queue import JobError
    from gateway.store.db import create_engine
    from gateway.store.files import FileStore
    from gateway.store.jobs import JobStore

    ctx = dist.setup(device)
    made: dict[str, Any] = {}
    if ctx.main:
        try:
            made = {"id": create()["id"]}
        except JobError as exc:
            made = {"error": str(exc)}
    made = ctx.broadcast(made)
    if "error" in made:
        if ctx.main:
            typer.echo(f"error: {made['error']}", err=True)
        _leave(ctx)
        return 2
    engine = create_engine(database_url)
    store = JobStore(engine)
    try:
        job = store.get(made["id"])
        assert job is not None, made
        if ctx.main:
            store.update(job["id"], worker_pid=os.getpid())
            typer.echo(f"{job['id']} {job['status']} (local, {ctx.world} rank{'s' if ctx.world > 1 else ''})")
        try:
            run_job(store, FileStore(engine), home, job)
        except Exception as exc:
            if ctx.main and store.finish(job["id"], "failed",
                                         error={"code": "worker_error", "message": str(exc), "param": None}):
                store.add_event(job["id"], f"Worker failed: {exc}", level="error")
            raise
        ctx.barrier()  # rank 0 marks the job after training: every rank reads the final state
        final = store.get(job["id"]) or {}
        if ctx.main:
            typer.echo(f"{job['id']} {final.get('status')} {final.get('fine_tuned_model') or ''}".rstrip())
        return 0 if final.get("status") == "succeeded" else 1
    finally:
        engine.dispose()
        _leave(ctx)


def _leave(ctx: Any) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
