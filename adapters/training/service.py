"""Jobs as the API and the CLI see them: store a file, create a job, start its worker, cancel.

No torch here: the gateway imports this module. Training itself happens in the worker
process (``python -m adapters.training.worker JOB_ID --database-url URL --home DIR``),
started detached (its own session, output to ``<home>/jobs/<id>/worker.log``), so a
gateway restart neither kills nor waits for it; or, for a Kubernetes Job or ``torchrun``,
in the calling process (``tuneloop finetune --in-process``, see ``inprocess.py``).

Which backend a job goes to follows its ``model``: a base of the catalog
(``adapters.models.catalog``: the gateway YAML's ``base_models`` and the embedded
``smollm2-135m-instruct``) trains a local LoRA; anything else is an OpenAI model and goes
to OpenAI's fine-tuning API. The OpenAI connection is, in order: the job's ``openai``
settings (from the gateway config's first target of kind ``openai``: its ``base_url`` and
``api_key_env``), then ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``. A local job's base, its
serving candidates, its output folder and device travel in the private ``_local`` key of
its ``method`` row (``wire.method_of`` hides it).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.models.catalog import EMBEDDED, BaseModel, lookup
from gateway.store.files import FileStore
from gateway.store.jobs import TERMINAL, JobStore

LOCAL_BASE = EMBEDDED  # the default base (adapters.engine.model.BASE_MODEL_NAME, without importing torch)
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
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


def backend_for(model: str, config: Any = None) -> str:
    return "local" if lookup(model, config) is not None else "openai"


def adapter_name(model: str, suffix: str | None, job_id: str) -> str:
    """``smollm2-135m-instruct-ft-<suffix>-<8 hex>``: a folder name and an engine ``lora_name``."""
    clean = re.sub(r"[^a-z0-9-]+", "-", (suffix or "").lower()).strip("-")[:40]
    tail = job_id.rsplit("-", 1)[-1][-8:]
    return "-".join(p for p in (model, "ft", clean, tail) if p)


# --- files ---

def store_file(engine: sa.Engine, home: Path, filename: str, content: bytes, purpose: str,
               project: str | None = None) -> dict[str, Any]:
    if purpose not in PURPOSES:
        raise JobError(f"purpose must be one of {', '.join(PURPOSES)}", "purpose")
    file_id = "file-" + secrets.token_hex(12)
    folder = Path(home) / "files"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_id
    tmp = folder / f".{file_id}.tmp"
    tmp.write_bytes(content)
    os.replace(tmp, path)
    row = {"id": file_id, "filename": filename or file_id, "purpose": purpose, "bytes": len(content),
           "sha256": hashlib.sha256(content).hexdigest(), "path": str(path), "project": project}
    return FileStore(engine).create(row)


def delete_file(engine: sa.Engine, file_id: str) -> dict[str, Any] | None:
    row = FileStore(engine).delete(file_id)
    if row is not None:
        Path(row["path"]).unlink(missing_ok=True)
    return row


# --- jobs ---

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


def create_job(engine: sa.Engine, home: Path, database_url: str, *, model: str, training_file: str | None = None,
               validation_file: str | None = None, method: dict[str, Any] | None = None,
               hyperparameters: dict[str, Any] | None = None, suffix: str | None = None,
               seed: int | None = None, metadata: dict[str, str] | None = None,
               openai: dict[str, Any] | None = None, project: str | None = None,
               start: bool = True, config: Any = None, allow_paths: bool = False,
               dataset_id: str | None = None, output: Path | None = None, device: str | None = None) -> dict[str, Any]:
    """A new job (``validating_files``). ``config``: the gateway config (its base-model catalog and
    targets); ``allow_paths`` (the CLI only): ``model`` may be a checkpoint folder; ``dataset_id``
    instead of ``training_file``: a dataset from ``tuneloop dataset build``; ``output``: the adapter's
    folder (its name is the fine-tuned model's); ``device``: cpu, cuda or auto."""
    _check_files(engine, training_file, validation_file, project)
    if suffix is not None and len(suffix) > 64:
        raise JobError("suffix must be at most 64 characters", "suffix")
    base = lookup(model, config, allow_paths)
    method = normalize_method(method, hyperparameters)
    private: dict[str, Any] = {}
    if base is not None:
        _check_local(method, base)
        _check_output(engine, output, config)
        private["_local"] = {"base": base.to_dict(), "output": str(output) if output else None, "device": device}
    elif dataset_id or output or device:
        raise JobError(f"{model!r} is not a base model of the catalog: datasets, --output and --device are "
                       "for local jobs (OpenAI jobs take an uploaded training_file)", "model")
    if dataset_id is not None:
        _check_dataset(engine, dataset_id, method["type"])
    elif training_file is None:
        raise JobError("training_file is required", "training_file")
    store = JobStore(engine)
    meta = dict(metadata or {})
    job = store.create({"backend": "local" if base else "openai", "model": model, "training_file": training_file,
                        "validation_file": validation_file, "method": {**method, **private},
                        "suffix": suffix, "seed": seed if seed is not None else secrets.randbelow(2**31),
                        "metadata": meta or None, "project": project,
                        "result_files": [], "external_id": None,
                        "dataset_id": dataset_id, "error": None})
    # connection settings for the OpenAI backend travel in a private key of the method row
    if openai:
        store.update(job["id"], method={**job["method"], "_openai": openai})
    store.add_event(job["id"], f"Created fine-tuning job: {job['id']}")
    if start:
        start_worker(engine, job["id"], database_url, home)
    return store.get(job["id"]) or job


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
    from adapters.training.hparams import HyperparameterError, check

    kind = method["type"]
    try:
        check(kind, method[kind]["hyperparameters"], base)
    except HyperparameterError as exc:
        raise JobError(str(exc), f"method.{kind}.hyperparameters.{exc.key}") from None


def _check_output(engine: sa.Engine, output: Path | None, config: Any) -> None:
    """The output folder's name becomes a model name: it must not take over an existing one."""
    from gateway.store.routes import RouteStore

    if output is None:
        return
    name = Path(output).name
    if (config is not None and name in config.models) or RouteStore(engine).get(name) is not None:
        raise JobError(f"{name!r} is already a model name of the gateway: choose another output folder name",
                       "output")


def _check_dataset(engine: sa.Engine, dataset_id: str, kind: str) -> None:
    from gateway.store.datasets import DatasetStore

    row = DatasetStore(engine).get(dataset_id)
    if row is None:
        raise JobError(f"No dataset {dataset_id!r} (tuneloop dataset list shows them).", "dataset", "invalid_file")
    want = "dpo" if kind == "dpo" else "sft"
    if row["kind"] != want:
        raise JobError(f"Dataset {dataset_id!r} is {row['kind']}, but the method is {kind}.", "dataset")


def start_worker(engine: sa.Engine, job_id: str, database_url: str, home: Path) -> subprocess.Popen[bytes]:
    work = Path(home) / "jobs" / job_id
    work.mkdir(parents=True, exist_ok=True)
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNELOOP_HOME": str(home),
           "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    url_args = ["--database-url", database_url]
    if sa.make_url(database_url).password:  # keep secrets off the command line (ps shows it)
        env["TUNELOOP_DATABASE_URL"], url_args = database_url, []
    with open(work / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.training.worker", job_id, *url_args, "--home", str(home)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)  # detached: not in the gateway's process group
    JobStore(engine).update(job_id, worker_pid=proc.pid)
    # reap it when it exits, so a long-lived gateway collects no zombies
    threading.Thread(target=proc.wait, name=f"reap-{job_id}", daemon=True).start()
    return proc


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


def resume_orphans(engine: sa.Engine, database_url: str, home: Path) -> list[str]:
    """Start a worker for every unfinished local job whose worker is gone (the machine or the
    server restarted); each continues from its newest checkpoint. Returns the job ids."""
    from gateway.store.jobs import unfinished

    resumed = []
    for job in unfinished(engine, "local"):
        pid = job.get("worker_pid")
        if pid and worker_alive(int(pid)):
            continue
        start_worker(engine, job["id"], database_url, home)
        resumed.append(job["id"])
    return resumed


def worker_alive(pid: int) -> bool:
    """True while the process runs (a zombie, exited but not reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False
