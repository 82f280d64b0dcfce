"""The job runner: ``python -m adapters.training.runner [--resume]`` (or ``tuneloop jobs runner``).

Takes the jobs the gateway queued (rows no process holds: ``gateway.store.jobs.waiting``)
and starts a worker for each (``service.start_worker``: one detached process per job, which
trains a local LoRA or follows an OpenAI job and moves the row on). It looks right after it
starts, then every ``--interval`` seconds (0.5). Taking a job is a compare-and-set on the
row (``JobStore.claim``), so several runners may share one database. ``--resume`` first
restarts the workers of local jobs whose worker died (what ``tuneloop serve`` does for the
embedded default): they continue from their newest checkpoint.

One queue, bounded: at most ``TUNELOOP_MAX_JOBS`` (4) jobs run at once across the database, and at
most ``TUNELOOP_MAX_JOBS_PER_PROJECT`` (2) of one project; the others wait, oldest first, with their
status unchanged (a key's rpm bounds how fast jobs are created: ``gateway.api.deps``).

``tuneloop serve`` starts it as a child process (``TUNELOOP_TRAINING_RUNNER=0`` turns that
off, for gateways that must not train); at scale it runs on the training machines (a
Kubernetes Deployment), or a job runs where it is created (``tuneloop finetune --in-process``).
The database comes from ``--database-url`` or ``TUNELOOP_DATABASE_URL`` (how URLs with a
password are passed), the home from ``--home`` or ``TUNELOOP_HOME``. SIGTERM stops it (and,
with ``--parent PID``, that parent's exit); the workers it started go on.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.training.service import resume_orphans, start_worker
from gateway.logs import configure
from gateway.store.db import create_engine
from gateway.store.jobs import JobStore, running, waiting

log = logging.getLogger("adapters.training.runner")
QUIET_S = 60.0  # a failing database is logged at most this often


def max_jobs() -> tuple[int, int]:
    """(jobs running at once, of them per project), from the environment."""
    return (int(os.environ.get("TUNELOOP_MAX_JOBS", "4")), int(os.environ.get("TUNELOOP_MAX_JOBS_PER_PROJECT", "2")))


def pick(queued: list[dict[str, Any]], busy: list[dict[str, Any]], limit: int,
         per_project: int) -> list[dict[str, Any]]:
    """The queued jobs (oldest first) that fit the free slots: ``limit`` in all, ``per_project`` each."""
    held = Counter(j.get("project") for j in busy)
    chosen: list[dict[str, Any]] = []
    for job in queued:
        if len(busy) + len(chosen) >= limit:
            break
        if held[job.get("project")] < per_project:
            held[job.get("project")] += 1
            chosen.append(job)
    return chosen


def start_waiting(engine: sa.Engine, database_url: str, home: Path) -> list[str]:
    """Start a worker for each queued job that fits the slots (``pick``) and that this runner manages
    to take; returns their ids."""
    store, started = JobStore(engine), []
    for job in pick(waiting(engine), running(engine), *max_jobs()):
        if not store.claim(job["id"], os.getpid()):
            continue  # another runner took it
        try:
            start_worker(engine, job["id"], database_url, home)
        except OSError as exc:  # taken, so it must end: no other runner will try it
            message = f"Could not start the job's worker: {exc}"
            if store.finish(job["id"], "failed", error={"code": "worker_error", "message": message, "param": None}):
                store.add_event(job["id"], message, level="error")
            continue
        started.append(job["id"])
    return started


def serve(database_url: str, home: Path, resume: bool, interval: float, stop: threading.Event,
          parent: int | None = None) -> None:
    """Until ``stop`` is set, or (``parent``) that process is gone."""
    engine = create_engine(database_url)
    failed_at = -QUIET_S
    try:
        while not stop.is_set() and (parent is None or os.getppid() == parent):
            try:
                if resume:
                    for job_id in resume_orphans(engine, database_url, home):
                        log.info("resumed fine-tuning job %s from its last checkpoint", job_id)
                    resume = False
                for job_id in start_waiting(engine, database_url, home):
                    log.info("started fine-tuning job %s", job_id)
            except sa.exc.SQLAlchemyError as exc:  # the database may be away, or not migrated yet
                if time.monotonic() - failed_at >= QUIET_S:
                    log.warning("could not read the job queue: %s", exc)
                    failed_at = time.monotonic()
            stop.wait(interval)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m adapters.training.runner")
    parser.add_argument("--database-url", default=os.environ.get("TUNELOOP_DATABASE_URL"))
    parser.add_argument("--home", type=Path, default=os.environ.get("TUNELOOP_HOME"))
    parser.add_argument("--resume", action="store_true", help="first restart the workers of orphaned local jobs")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two looks at the queue")
    parser.add_argument("--parent", type=int, help="exit when this process (our parent) does")
    args = parser.parse_args()
    if not args.database_url or not args.home:
        parser.error("--database-url (or TUNELOOP_DATABASE_URL) and --home (or TUNELOOP_HOME) are required")
    configure()  # the gateway's log format (JSON by default), secrets redacted
    run(args.database_url, Path(args.home).resolve(), args.resume, args.interval, args.parent)


def run(database_url: str, home: Path, resume: bool = False, interval: float = 0.5,
        parent: int | None = None) -> None:
    """:func:`serve` until SIGTERM or SIGINT (or ``parent`` exits: a gateway killed with SIGKILL)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(database_url, home, resume, interval, stop, parent)


if __name__ == "__main__":
    main()
