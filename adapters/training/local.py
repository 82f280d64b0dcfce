"""The local backend: peft LoRA on a base of the catalog, in a worker process (or ``torchrun`` ranks).

``LocalBackend.launch(job)`` starts the worker and ``poll(handle)`` reads the job's row.
Inside the worker, :func:`run_job` walks OpenAI's states:

    validating_files  every line checked (a bad one fails the job, naming its line number)
    queued            waiting for the machine's training lock (one local run at a time)
    running           train.train(...), events per step, checkpoints every N steps
    succeeded         the adapter renamed into its folder (``--output``, the base's
                      ``adapters_dir`` or $TUNELOOP_HOME/adapters, then <name>), row
                      "candidate", and a route ``<name>`` to the targets serving the base
                      (``publish``): callable through every gateway replica
    failed/cancelled  nothing published: the temporary output is removed, no adapters row

The training file is the job's uploaded file, or the file of its dataset (``dataset_id``,
from ``tuneloop dataset build``). Under ``torchrun`` every rank runs this; rank 0 alone
writes rows, checkpoints and the adapter, and tells the others whether to go on.
A re-run of the same job (the worker died) resumes from its newest checkpoint.
"""

from __future__ import annotations

import fcntl
import shutil
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from adapters.training.backend import JobHandle, JobInfo, info_from_row
from adapters.training.data import DataError, read_jsonl
from adapters.training.service import adapter_name, start_worker
from gateway.api.fine_tuning_wire import hyperparameters_of
from gateway.catalog import EMBEDDED, BaseModel, catalog
from gateway.hyperparameters import to_config
from gateway.store.datasets import DatasetStore
from gateway.store.files import FileStore
from gateway.store.jobs import JobStore


class LocalBackend:
    def __init__(self, engine: Any, home: Path, database_url: str) -> None:
        self.engine, self.home, self.database_url = engine, Path(home), database_url

    def launch(self, job: dict[str, Any]) -> JobHandle:
        proc = start_worker(self.engine, job["id"], self.database_url, self.home)
        return JobHandle(job["id"], "local", pid=proc.pid)

    def poll(self, handle: JobHandle) -> JobInfo:
        row = JobStore(self.engine).get(handle.job_id)
        if row is None:
            raise KeyError(handle.job_id)
        return info_from_row(row)


def train_config(job: dict[str, Any]) -> Any:
    """OpenAI's hyperparameters ("auto" or a number) plus local extras -> ``TrainConfig``
    ("auto" stays None: the trainer chooses by the base's size)."""
    from adapters.training.train import TrainConfig

    method = job["method"] or {"type": "supervised"}
    local = method.get("_local") or {}
    fields = to_config(hyperparameters_of(method))
    return TrainConfig(method="dpo" if method["type"] == "dpo" else "sft", seed=int(job["seed"] or 0),
                       device=local.get("device"), strategy=local.get("strategy") or "ddp", **fields)


def base_of(job: dict[str, Any]) -> BaseModel:
    local = (job.get("method") or {}).get("_local") or {}
    return BaseModel.from_dict(local["base"]) if local.get("base") else catalog()[EMBEDDED]


def output_of(job: dict[str, Any], base: BaseModel, home: Path) -> Path:
    """The adapter's folder: ``--output``, else ``<adapters_dir or home/adapters>/<name>``."""
    local = (job.get("method") or {}).get("_local") or {}
    if local.get("output"):
        return Path(local["output"]).resolve()
    name = adapter_name(base.name, job.get("suffix"), job["id"])
    return (Path(base.adapters_dir) if base.adapters_dir else Path(home) / "adapters").resolve() / name


class DbHooks:
    """The training loop's hooks: events and checkpoints as rows, cancel read from the row."""

    def __init__(self, store: JobStore, job_id: str, name: str) -> None:
        self.store, self.job_id, self.name = store, job_id, name

    def on_event(self, message: str, data: dict[str, Any] | None = None, level: str = "info") -> None:
        self.store.add_event(self.job_id, message, level=level, data=data)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        total = int(metrics.get("total_steps", step))
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("step", "total_steps"))
        self.store.add_event(self.job_id, f"Step {step}/{total}: {shown}", type="metrics", data=metrics)

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self.store.add_checkpoint(self.job_id, step, f"{self.name}:ckpt-step-{step}", str(path), metrics)

    def should_stop(self) -> bool:
        return self.store.cancel_requested(self.job_id)


@contextmanager
def training_lock(home: Path) -> Any:
    """One local training run per machine at a time; the others wait in ``queued``."""
    path = Path(home) / "jobs" / ".train.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sources(store: JobStore, files: FileStore, job: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """param -> (what to name in messages, path): the uploaded files, else the dataset's files."""
    if not job.get("training_file") and job.get("dataset_id"):
        row = DatasetStore(store.engine).get(job["dataset_id"]) or {}
        found = {"training_file": (f"dataset {job['dataset_id']}", row.get("path"))}
        val = Path(row["val_path"]) if row.get("val_path") else None
        if val is not None and val.is_file() and val.stat().st_size > 0:  # a small set may have no held-out lines
            found["validation_file"] = (f"dataset {job['dataset_id']} (validation)", row["val_path"])
        return found
    found = {}
    for param in ("training_file", "validation_file"):
        if job.get(param):
            stored = files.get(job[param])
            found[param] = (f"{param.replace('_', ' ')} {job[param]}", stored["path"] if stored else None)
    return found


def _validate(store: JobStore, files: FileStore, job: dict[str, Any], fmt: str) -> dict[str, Path] | None:
    paths: dict[str, Path] = {}
    for param, (what, path) in _sources(store, files, job).items():
        try:
            if path is None:
                raise DataError("its file no longer exists")
            if not Path(path).is_file():
                raise DataError(f"{path} does not exist here (mount the volume it was written to)")
            read_jsonl(Path(path), fmt)
        except DataError as exc:
            msg = f"The {what} is invalid: {exc}"
            store.add_event(job["id"], msg, level="error", data={"param": param, "line": exc.line})
            store.finish(job["id"], "failed", error={"code": "invalid_file", "message": msg, "param": param})
            return None
        paths[param] = Path(path)
    store.add_event(job["id"], "Validated training file(s)")
    return paths


def run_job(store: JobStore, files: FileStore, home: Path, job: dict[str, Any]) -> None:
    from adapters.training import dist
    from adapters.training.train import Cancelled, train

    job_id, cfg, base = job["id"], train_config(job), base_of(job)
    ctx = dist.setup(cfg.device, cfg.strategy)
    paths = None
    if ctx.main:
        paths = _validate(store, files, job, "dpo" if cfg.method == "dpo" else "sft")
        paths = paths if paths is not None and store.update(job_id, status="queued") else None
    paths = ctx.broadcast(paths)  # the other ranks go on only if rank 0 does
    if paths is None:
        return
    out, work = output_of(job, base, home), Path(home) / "jobs" / job_id
    with training_lock(home) if not ctx.distributed else nullcontext():  # torchrun owns its devices
        if not ctx.broadcast(store.update(job_id, status="running") if ctx.main else None):
            return
        hooks = DbHooks(store, job_id, out.name)
        if ctx.main:
            store.add_event(job_id, "Fine-tuning job started", data={"base": base.name, "ranks": ctx.world})
        try:
            result = train(cfg, paths["training_file"], out, work, home, hooks,
                           validation_file=paths.get("validation_file"), base=base)
        except Cancelled:
            if ctx.main:
                store.add_event(job_id, "Training stopped: the job was cancelled")
            return
        except Exception as exc:  # any failure ends the job, with the reason in its error
            if not ctx.main:
                raise
            store.add_event(job_id, f"Training failed: {exc}", level="error",
                            data={"traceback": traceback.format_exc()[-4000:]})
            store.finish(job_id, "failed", error={"code": "training_error", "message": str(exc), "param": None})
            return
    if ctx.main:
        _register(store, job, base, out, result)


def _register(store: JobStore, job: dict[str, Any], base: BaseModel, out: Path, result: Any) -> None:
    from adapters.training.publish import forget_adapter, publish
    from gateway.store.routes import RouteStore

    job_id, name = job["id"], out.name
    targets = publish(store.engine, job, name, str(out), base)
    # the registry row first: whoever sees "succeeded" finds the adapter
    adapter_id = store.register_adapter(name, job["model"], str(out), job_id, result.metrics)
    if not store.finish(job_id, "succeeded", fine_tuned_model=name, trained_tokens=result.trained_tokens):
        RouteStore(store.engine).delete(name)  # cancelled while the adapter was being written
        forget_adapter(store.engine, adapter_id)
        shutil.rmtree(out, ignore_errors=True)
        return
    store.add_event(job_id, f"New fine-tuned model created: {name}",
                    data={"path": str(out), "tokens_per_s": result.tokens_per_s, "targets": targets})
    if not targets:
        store.add_event(job_id, f"No target serves base {base.name!r}: {name} is not routed by the gateway "
                        "(name the serving targets in its base_models entry, or promote it)", level="warn")
    store.add_event(job_id, "The job has successfully completed")
