"""The training worker: ``python -m adapters.training.worker JOB_ID [--database-url URL] --home DIR``.

One process per job, started by the runner (the jobs the API queues) or by the CLI and the
loop (``service.start_worker``); it updates the job's row and events as it goes and exits
when the job ends. Local jobs train here (``local.run_job``); OpenAI jobs are launched and followed here
(``openai_backend.follow``). Running it again for a job that did not end resumes it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from gateway.store.db import create_engine, upgrade
from gateway.store.files import FileStore
from gateway.store.jobs import TERMINAL, JobStore

log = logging.getLogger("adapters.training.worker")


def run(job_id: str, database_url: str, home: Path) -> int:
    engine = create_engine(database_url)
    upgrade(engine)
    store = JobStore(engine)
    try:
        job = store.get(job_id)
        if job is None:
            log.error("no job %s in %s", job_id, database_url)
            return 2
        if job["status"] in TERMINAL:
            log.info("job %s already %s", job_id, job["status"])
            return 0
        store.update(job_id, worker_pid=os.getpid())
        if job["backend"] == "openai":
            from adapters.training.openai_backend import follow

            follow(store, FileStore(engine), job)
        else:
            from adapters.training.local import run_job

            run_job(store, FileStore(engine), home, job)
        return 0
    except Exception as exc:  # the job must end, whatever went wrong
        log.exception("job %s failed", job_id)
        if store.finish(job_id, "failed", error={"code": "worker_error", "message": str(exc), "param": None}):
            store.add_event(job_id, f"Worker failed: {exc}", level="error")
        return 1
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m adapters.training.worker")
    parser.add_argument("job_id")
    parser.add_argument("--database-url", default=os.environ.get("TUNELOOP_DATABASE_URL"),
                        help="default: $TUNELOOP_DATABASE_URL (how URLs with a password are passed)")
    parser.add_argument("--home", type=Path, required=True)
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or TUNELOOP_DATABASE_URL) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(run(args.job_id, args.database_url, args.home))


if __name__ == "__main__":
    main()
