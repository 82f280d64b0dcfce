"""The loop's stages. Each takes the cycle's context and returns what it produced (saved with
the stage as finished), or raises ``Rejected`` to end the cycle without promoting.

A stage may be re-entered after a crash: ``train`` finds its job in the state and follows
(or restarts the worker of) that job instead of creating another; ``canary`` finds its
start time and keeps analysing instead of shifting weights again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.loop.config import LoopSettings
from adapters.registry.workspace import Workspace
from gateway.store.cycles import CycleStore


class Rejected(Exception):
    """The cycle ends without a promotion (the gate or the canary said no)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class NotYet(Exception):
    """The stage cannot finish yet (e.g. too little shadow traffic): the cycle stays open."""


@dataclass
class Ctx:
    ws: Workspace
    alias: str
    cfg: LoopSettings
    cycle_id: str
    state: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def say(self, msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"[loop {self.alias}] {msg}")

    @property
    def projects(self) -> list[str]:
        """The projects whose traffic and feedback may train this alias (adapters.loop.ownership)."""
        from adapters.loop.ownership import training_projects

        return training_projects(self.ws, self.alias)

    @property
    def folder(self) -> Path:
        return self.ws.home / "loop" / self.cycle_id


def dataset(ctx: Ctx) -> dict[str, Any]:
    from adapters.datasets.build import BuildOptions, build
    from gateway.log.export import ExportFilters

    d = ctx.cfg.dataset
    filters = ExportFilters(model=ctx.alias, has_correction=d.has_correction, min_rating=d.min_rating,
                            projects=ctx.projects)
    opts = BuildOptions(fmt=d.format, out=ctx.folder / "train.jsonl", val_fraction=d.val_fraction,
                        filters=filters, name=f"{ctx.alias}-{ctx.cycle_id}", progress=ctx.progress)
    report = build(ctx.ws.engine, opts)
    rows = report["written"]
    ctx.say(f"dataset {report['dataset_id']}: {rows['train']} train / {rows['val']} held-out lines")
    if rows["train"] == 0:
        raise Rejected("rejected", "the dataset has no training lines")
    return {"dataset_id": report["dataset_id"], "train_path": report["path"], "val_path": report["val_path"],
            "val_rows": rows["val"], "train_rows": rows["train"]}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a finished child we started is a zombie until reaped
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _start_job(ctx: Ctx) -> str:
    from adapters.training.service import create_job, store_file
    from gateway.store.jobs import JobStore

    path = Path(ctx.state["train_path"])
    fid = store_file(ctx.ws.engine, ctx.ws.home, path.name, path.read_bytes(), "fine-tune")["id"]
    kind = "dpo" if ctx.cfg.dataset.format == "dpo" else "supervised"
    job = create_job(ctx.ws.engine, ctx.ws.home, ctx.ws.database_url, model=ctx.cfg.base_model,
                     training_file=fid, suffix=ctx.alias[:24], seed=0,
                     method={"type": kind, kind: {"hyperparameters": dict(ctx.cfg.training)}},
                     metadata={"loop_cycle": ctx.cycle_id, "alias": ctx.alias}, start=False,
                     config=ctx.ws.config)  # the config's base_models: the loop trains on any catalog base
    JobStore(ctx.ws.engine).update(job["id"], dataset_id=ctx.state["dataset_id"])
    CycleStore(ctx.ws.engine).update_state(ctx.cycle_id, {"job_id": job["id"]})  # before the worker starts
    return str(job["id"])


def train(ctx: Ctx) -> dict[str, Any]:
    from adapters.training.service import start_worker
    from gateway.store.jobs import TERMINAL, JobStore

    store = JobStore(ctx.ws.engine)
    job_id = ctx.state.get("job_id")
    job = store.get(job_id) if job_id else None
    if not job_id or job is None:
        job_id = _start_job(ctx)
        start_worker(ctx.ws.engine, job_id, ctx.ws.database_url, ctx.ws.home)
        ctx.say(f"training job {job_id} started")
    elif job["status"] not in TERMINAL and not _alive(job.get("worker_pid")):
        start_worker(ctx.ws.engine, job_id, ctx.ws.database_url, ctx.ws.home)  # resumes from its checkpoint
        ctx.say(f"training job {job_id} resumed")
    job = _follow(ctx, store, str(job_id))
    if job["status"] != "succeeded":
        raise RuntimeError(f"training job {job_id} {job['status']}: {(job.get('error') or {}).get('message')}")
    adapter = store.adapters_of(str(job_id))[-1]
    ctx.say(f"adapter {adapter['name']} ({adapter['id']}) trained")
    return {"adapter_id": adapter["id"], "adapter": adapter["name"]}


def _follow(ctx: Ctx, store: Any, job_id: str) -> dict[str, Any]:
    from tqdm import tqdm

    from gateway.store.jobs import TERMINAL

    bar = None
    while True:
        job = store.get(job_id) or {}
        events, _ = store.events(job_id, limit=5)
        for ev in events:
            data = ev.get("data") or {}
            if bar is None and "steps" in data:
                bar = tqdm(total=int(data["steps"]), desc="train", unit="step", disable=not ctx.progress)
            if bar is not None and ev["type"] == "metrics":
                if int(data.get("step", bar.n)) != bar.n:
                    bar.n = int(data.get("step", bar.n))
                    bar.set_postfix(loss=f"{data.get('train_loss', 0):.3f}")
                break
        if job.get("status") in TERMINAL:
            if bar is not None:
                bar.close()
            return job
        if job.get("status") and not _alive(job.get("worker_pid")):
            time.sleep(2.0)  # the worker may just have finished: read once more before giving up
            job = store.get(job_id) or {}
            if job.get("status") not in TERMINAL:
                raise RuntimeError(f"the worker of {job_id} died (status {job.get('status')}); rerun to resume")
        time.sleep(1.0)
