"""The training side's jobs: create one and run it, start a job's worker, resume orphans.

No torch here. Training happens in a worker process (``python -m adapters.training.worker
JOB_ID --database-url URL --home DIR``), started detached (its own session, output to
``<home>/jobs/<id>/worker.log``), so neither a gateway nor a runner restart kills or waits
for it; or, for a Kubernetes Job or ``torchrun``, in the calling process (``tuneloop
finetune --in-process``, see ``inprocess.py``).

Jobs the API creates are queued rows: the runner (``runner.py``) starts their workers. The
command line and the loop create theirs with :func:`create_job`, which checks and inserts
the job like the API does (``gateway.job_queue``), holding it for this process so no runner
takes it, then (``start=True``) starts its worker.

Which backend a job goes to follows its ``model``: a base of the catalog (``gateway.catalog``)
trains a local LoRA; anything else is an OpenAI model and goes to OpenAI's fine-tuning API.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.job_queue import create_job as queue_job
from gateway.store.files import store_file  # noqa: F401  (the loop's and the tests' way to upload a file)
from gateway.store.jobs import JobStore, unfinished


def adapter_name(model: str, suffix: str | None, job_id: str) -> str:
    """``smollm2-135m-instruct-ft-<suffix>-<8 hex>``: a folder name and an engine ``lora_name``
    (a base named by its Hugging Face id, ``HuggingFaceTB/SmolLM2-135M-Instruct``, gives its last part)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", (suffix or "").lower()).strip("-")[:40]
    stem = re.sub(r"[^a-z0-9.-]+", "-", model.rsplit("/", 1)[-1].lower()).strip("-.")
    tail = job_id.rsplit("-", 1)[-1][-8:]
    return "-".join(p for p in (stem, "ft", clean, tail) if p)


def create_job(engine: sa.Engine, home: Path, database_url: str, *, start: bool = True,
               **fields: Any) -> dict[str, Any]:
    """A new job held by this process (see ``gateway.job_queue.create_job`` for ``fields``; raises
    ``JobError``); ``start``: start its worker now, else the caller runs it (``worker.run``,
    ``inprocess.run``) or starts it later (:func:`start_worker`)."""
    job = queue_job(engine, worker_pid=os.getpid(), **fields)
    if start:
        start_worker(engine, job["id"], database_url, home)
    return JobStore(engine).get(job["id"]) or job


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
            start_new_session=True)  # detached: not in the starter's process group
    JobStore(engine).update(job_id, worker_pid=proc.pid)
    # reap it when it exits, so a long-lived starter (the runner) collects no zombies
    threading.Thread(target=proc.wait, name=f"reap-{job_id}", daemon=True).start()
    return proc


def resume_orphans(engine: sa.Engine, database_url: str, home: Path) -> list[str]:
    """Start a worker for every unfinished local job whose worker is gone (the machine or the
    server restarted); each continues from its newest checkpoint. Returns the job ids."""
    store, resumed = JobStore(engine), []
    for job in unfinished(engine, "local"):
        pid = job.get("worker_pid")
        if pid and worker_alive(int(pid)):
            continue
        if store.claim(job["id"], os.getpid(), expected=pid):  # another runner may resume it first
            start_worker(engine, job["id"], database_url, home)
            resumed.append(job["id"])
    return resumed


def worker_alive(pid: int) -> bool:
    """True while the process runs (a zombie, exited but not reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False
