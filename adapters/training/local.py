"""The local backend: peft LoRA on the engine's base model, in a worker process.

``LocalBackend.launch(job)`` starts the worker and ``poll(handle)`` reads the job's row.
Inside the worker, :func:`run_job` walks OpenAI's states:

    validating_files  every line checked (a bad one fails the job, naming its line number)
    queued            waiting for the machine's training lock (one local run at a time)
    running           train.train(...), events per step, checkpoints every N steps
    succeeded         the adapter renamed into $TUNELOOP_HOME/adapters/<name>, row "candidate"
    failed/cancelled  nothing published: the temporary output is removed, no adapters row

A re-run of the same job (the worker died) resumes from its newest checkpoint.
"""

from __future__ import annotations

import fcntl
import shutil
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adapters.training.backend import JobHandle, JobInfo, info_from_row
from adapters.training.data import DataError, read_jsonl
from adapters.training.service import adapter_name, start_worker
from adapters.training.wire import hyperparameters_of
from gateway.log.files import FileStore
from gateway.log.jobs import JobStore

AUTO = {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1.0, "beta": 0.1}
EXTRA = ("lora_r", "lora_alpha", "max_steps", "max_length", "learning_rate", "checkpoint_every", "warmup_steps")


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
    """OpenAI's hyperparameters ("auto" or a number) plus local extras -> ``TrainConfig``."""
    from adapters.training.train import BASE_LR, TrainConfig

    method = job["method"] or {"type": "supervised"}
    hp = {k: v for k, v in hyperparameters_of(method).items() if v != "auto"}
    val = {**AUTO, **hp}
    cfg = TrainConfig(method="dpo" if method["type"] == "dpo" else "sft", n_epochs=int(val["n_epochs"]),
                      batch_size=int(val["batch_size"]), beta=float(val["beta"]),
                      learning_rate=BASE_LR * float(val["learning_rate_multiplier"]), seed=int(job["seed"] or 0))
    for key in EXTRA:  # an explicit learning_rate wins over the multiplier
        if key in hp:
            setattr(cfg, key, float(hp[key]) if key == "learning_rate" else int(hp[key]))
    return cfg


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


def _validate(store: JobStore, files: FileStore, job: dict[str, Any], fmt: str) -> dict[str, Path] | None:
    paths: dict[str, Path] = {}
    for param in ("training_file", "validation_file"):
        fid = job.get(param)
        if not fid:
            continue
        row = files.get(fid)
        try:
            if row is None:
                raise DataError(f"file {fid} no longer exists")
            read_jsonl(Path(row["path"]), fmt)
        except DataError as exc:
            msg = f"The {param.replace('_', ' ')} {fid} is invalid: {exc}"
            store.add_event(job["id"], msg, level="error", data={"param": param, "line": exc.line})
            store.finish(job["id"], "failed", error={"code": "invalid_file", "message": msg, "param": param})
            return None
        paths[param] = Path(row["path"])
    store.add_event(job["id"], "Validated training file(s)")
    return paths


def run_job(store: JobStore, files: FileStore, home: Path, job: dict[str, Any]) -> None:
    from adapters.training.train import Cancelled, train

    job_id, cfg = job["id"], train_config(job)
    paths = _validate(store, files, job, "dpo" if cfg.method == "dpo" else "sft")
    if paths is None or not store.update(job_id, status="queued"):
        return
    name = adapter_name(job["model"], job.get("suffix"), job_id)
    out, work = Path(home) / "adapters" / name, Path(home) / "jobs" / job_id
    with training_lock(home):
        if not store.update(job_id, status="running"):
            return
        store.add_event(job_id, "Fine-tuning job started")
        try:
            result = train(cfg, paths["training_file"], out, work, home, DbHooks(store, job_id, name),
                           validation_file=paths.get("validation_file"))
        except Cancelled:
            store.add_event(job_id, "Training stopped: the job was cancelled")
            return
        except Exception as exc:  # any failure ends the job, with the reason in its error
            store.add_event(job_id, f"Training failed: {exc}", level="error",
                            data={"traceback": traceback.format_exc()[-4000:]})
            store.finish(job_id, "failed", error={"code": "training_error", "message": str(exc), "param": None})
            return
        finally:
            shutil.rmtree(work / "output.tmp", ignore_errors=True)
    _register(store, job_id, job["model"], name, out, result)


def _register(store: JobStore, job_id: str, model: str, name: str, out: Path, result: Any) -> None:
    if not store.finish(job_id, "succeeded", fine_tuned_model=name, trained_tokens=result.trained_tokens):
        shutil.rmtree(out, ignore_errors=True)  # cancelled while the adapter was being written
        return
    store.register_adapter(name, model, str(out), job_id, result.metrics)
    store.add_event(job_id, f"New fine-tuned model created: {name}",
                    data={"path": str(out), "tokens_per_s": result.tokens_per_s})
    store.add_event(job_id, "The job has successfully completed")
