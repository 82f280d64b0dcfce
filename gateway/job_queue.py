"""Fine-tuning jobs as the gateway sees them: checked, queued as rows, cancelled. Training is elsewhere.

    job = create_job(engine, model=..., training_file=..., method=..., config=config)  # a 400 -> JobError
    cancel_job(engine, job_id)                                                         # JobNotFound, JobFinished

The gateway and the training side meet in the database: :func:`create_job` checks what can
be checked at once (the files exist, belong to the project and have purpose ``fine-tune``;
``method`` and its hyperparameters; the ``model``: a base of the catalog, ``gateway.catalog``,
trains a local LoRA, anything else is an OpenAI model) and inserts the job's row, status
``validating_files``. A runner of the training side (``adapters.training.runner``, which
``tuneloop serve`` starts as a child process) takes rows no process holds (``worker_pid``
unset) and starts their workers, which move the job on. ``worker_pid`` set at creation
means the creator runs the job itself (``tuneloop finetune``, the loop).

A local job's base, its serving candidates, its output folder and device travel in the
private ``_local`` key of its ``method`` row, the OpenAI connection (the config's first
target of kind ``openai``) in ``_openai`` (``fine_tuning_wire.method_of`` hides both).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.catalog import BaseModel, lookup
from gateway.hyperparameters import HyperparameterError, check
from gateway.store.datasets import DatasetStore
from gateway.store.files import FileStore
from gateway.store.jobs import TERMINAL, JobStore
from gateway.store.routes import RouteStore

METHODS = ("supervised", "dpo")


class JobError(ValueError):
    """The request cannot become a job (HTTP 400); ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class JobNotFound(KeyError):
    pass


class JobFinished(RuntimeError):
    """The job already ended (HTTP 409 for a cancel)."""


def normalize_method(method: dict[str, Any] | None, hyperparameters: dict[str, Any] | None) -> dict[str, Any]:
    """``method`` as OpenAI echoes it; the deprecated top-level ``hyperparameters`` fill in."""
    method = dict(method or {"type": "supervised"})
    kind = method.get("type", "supervised")
    if kind not in METHODS:
        raise JobError(f"method.type must be one of {', '.join(METHODS)} (got {kind!r})", "method.type")
    body = dict(method.get(kind) or {})
    hp = {**(hyperparameters or {}), **(body.get("hyperparameters") or {})}
    body["hyperparameters"] = hp
    return {"type": kind, kind: body}


def create_job(engine: sa.Engine, *, model: str, training_file: str | None = None,
               validation_file: str | None = None, method: dict[str, Any] | None = None,
               hyperparameters: dict[str, Any] | None = None, suffix: str | None = None,
               seed: int | None = None, metadata: dict[str, str] | None = None,
               openai: dict[str, Any] | None = None, project: str | None = None,
               config: Any = None, allow_paths: bool = False, dataset_id: str | None = None,
               output: Path | None = None, device: str | None = None, strategy: str | None = None,
               worker_pid: int | None = None) -> dict[str, Any]:
    """A new job (``validating_files``). ``config``: the gateway config (its base-model catalog);
    ``allow_paths`` (the CLI only): ``model`` may be a checkpoint folder; ``dataset_id`` instead of
    ``training_file``: a dataset from ``tuneloop dataset build``; ``output``: the adapter's folder (its
    name is the fine-tuned model's); ``device``: cpu, cuda or auto; ``strategy``: ddp or fsdp across
    ``torchrun`` ranks; ``worker_pid``: the process that
    runs the job (None: queued for a runner)."""
    _check_files(engine, training_file, validation_file, project)
    if suffix is not None and len(suffix) > 64:
        raise JobError("suffix must be at most 64 characters", "suffix")
    base = lookup(model, config, allow_paths)
    method = normalize_method(method, hyperparameters)
    private: dict[str, Any] = {"_openai": openai} if openai and base is None else {}
    if base is not None:
        _check_local(method, base)
        _check_output(engine, output, config)
        private["_local"] = {"base": base.to_dict(), "output": str(output) if output else None, "device": device,
                             "strategy": strategy}
    elif dataset_id or output or device or strategy:
        raise JobError(f"{model!r} is not a base model of the catalog: datasets, --output, --device and --strategy are "
                       "for local jobs (OpenAI jobs take an uploaded training_file)", "model")
    if dataset_id is not None:
        _check_dataset(engine, dataset_id, method["type"])
    elif training_file is None:
        raise JobError("training_file is required", "training_file")
    store = JobStore(engine)
    job = store.create({"backend": "local" if base else "openai", "model": model, "training_file": training_file,
                        "validation_file": validation_file, "method": {**method, **private},
                        "suffix": suffix, "seed": seed if seed is not None else secrets.randbelow(2**31),
                        "metadata": dict(metadata or {}) or None, "project": project,
                        "result_files": [], "external_id": None, "dataset_id": dataset_id, "error": None,
                        "worker_pid": worker_pid})
    store.add_event(job["id"], f"Created fine-tuning job: {job['id']}")
    return job


def cancel_job(engine: sa.Engine, job_id: str) -> dict[str, Any]:
    """Mark the job cancelled now; its worker stops between two steps and publishes nothing."""
    store = JobStore(engine)
    job = store.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if job["status"] in TERMINAL:
        raise JobFinished(f"Job {job_id} has already {job['status']}; it cannot be cancelled.")
    store.update(job_id, cancel_requested=True)
    if store.finish(job_id, "cancelled"):
        store.add_event(job_id, "Job cancelled", data={"at": time.time()})
    return store.get(job_id) or job


def _check_files(engine: sa.Engine, training_file: str | None, validation_file: str | None,
                 project: str | None) -> None:
    files = FileStore(engine)
    for param, fid in (("training_file", training_file), ("validation_file", validation_file)):
        if fid is None:
            continue
        row = files.get(fid, project)
        if row is None:
            raise JobError(f"Invalid file ID {fid!r}: no such file.", param, "invalid_file")
        if row["purpose"] != "fine-tune":
            raise JobError(f"File {fid!r} has purpose {row['purpose']!r}, not 'fine-tune'.", param)


def _check_local(method: dict[str, Any], base: BaseModel) -> None:
    kind = method["type"]
    try:
        check(kind, method[kind]["hyperparameters"], base)
    except HyperparameterError as exc:
        raise JobError(str(exc), f"method.{kind}.hyperparameters.{exc.key}") from None


def _check_output(engine: sa.Engine, output: Path | None, config: Any) -> None:
    """The output folder's name becomes a model name: it must not take over an existing one."""
    if output is None:
        return
    name = Path(output).name
    if (config is not None and name in config.models) or RouteStore(engine).get(name) is not None:
        raise JobError(f"{name!r} is already a model name of the gateway: choose another output folder name",
                       "output")


def _check_dataset(engine: sa.Engine, dataset_id: str, kind: str) -> None:
    row = DatasetStore(engine).get(dataset_id)
    if row is None:
        raise JobError(f"No dataset {dataset_id!r} (tuneloop dataset list shows them).", "dataset", "invalid_file")
    if row.get("stale"):
        raise JobError(f"Dataset {dataset_id!r} was built from interactions since erased ({row['stale']['reason']}): "
                       "build it again (tuneloop dataset build) before training on it.", "dataset")
    want = "dpo" if kind == "dpo" else "sft"
    if row["kind"] != want:
        raise JobError(f"Dataset {dataset_id!r} is {row['kind']}, but the method is {kind}.", "dataset")
