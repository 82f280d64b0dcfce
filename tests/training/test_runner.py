"""The job queue between the gateway and the training side: the API inserts a row no process
holds; a runner takes it (a compare-and-set on ``worker_pid``) and starts its worker. A gateway
with ``TUNELOOP_TRAINING_RUNNER=0`` starts no runner; ``tuneloop jobs runner`` runs its jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters.training.runner import pick
from gateway.job_queue import cancel_job, create_job
from gateway.store import db
from gateway.store.files import store_file
from gateway.store.jobs import JobStore, running, waiting
from tests.fakes.openai_finetune import FakeFineTuning
from tests.fixtures.gateway import FAKE_KEY, FAKE_KEY_ENV, GatewayProcess
from tests.training.data import sft_rows, write_jsonl

TERMINAL = ("succeeded", "failed", "cancelled")


def test_one_queue_with_slots_per_project(database_url: str, tmp_path: Path) -> None:
    """Issue 19: a key that creates 8 jobs in a second does not get 8 workers: the runner starts what
    fits ``TUNELOOP_MAX_JOBS`` and ``..._PER_PROJECT``; the rest wait, oldest first."""
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    path = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    fids = {p: store_file(engine, tmp_path, path.name, path.read_bytes(), "fine-tune", p)["id"]
            for p in ("slot-a", "slot-b")}
    made = [create_job(engine, model="gpt-4o-mini-2024-07-18", training_file=fids[p], project=p)["id"]
            for p in ("slot-a", "slot-a", "slot-a", "slot-b", "slot-b")]
    try:
        assert JobStore(engine).claim(made[0], 111)  # one of a's runs already
        queued = [j for j in waiting(engine) if j["id"] in made]
        busy = [j for j in running(engine) if j["id"] in made]
        assert [j["id"] for j in busy] == made[:1]
        assert [j["id"] for j in pick(queued, busy, 4, 2)] == [made[1], made[3], made[4]]
        assert [j["id"] for j in pick(queued, busy, 3, 2)] == [made[1], made[3]]
        assert [j["id"] for j in pick(queued, busy, 4, 1)] == [made[3]]
    finally:
        for job_id in made:
            cancel_job(engine, job_id)


def test_a_queued_job_is_taken_once(database_url: str, tmp_path: Path) -> None:
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    path = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    fid = store_file(engine, tmp_path, path.name, path.read_bytes(), "fine-tune")["id"]
    job = create_job(engine, model="gpt-4o-mini-2024-07-18", training_file=fid)
    assert job["status"] == "validating_files" and job["worker_pid"] is None
    assert [j["id"] for j in waiting(engine)] == [job["id"]]
    store = JobStore(engine)
    assert store.claim(job["id"], 111)
    assert not store.claim(job["id"], 222)  # a second runner finds it taken
    assert waiting(engine) == []
    assert not store.claim(job["id"], 333, expected=999)  # resuming takes it only from the worker it saw die
    assert store.claim(job["id"], 333, expected=111)
    cancel_job(engine, job["id"])
    assert not store.claim(job["id"], 444, expected=333)  # an ended job is nobody's to take
    held = create_job(engine, model="gpt-4o-mini-2024-07-18", training_file=fid, worker_pid=os.getpid())
    assert held["worker_pid"] == os.getpid() and waiting(engine) == []  # its creator runs it
    engine.dispose()


def _children(pid: int) -> list[str]:
    """The command lines of a process's children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                found.append(Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass
    return found


def test_a_gateway_without_its_runner_queues_jobs_that_tuneloop_jobs_runner_runs(
        fake_finetune: FakeFineTuning, tmp_path: Path) -> None:
    config: dict[str, Any] = {"models": {}, "targets": {"openai": {
        "kind": "openai", "base_url": fake_finetune.base_url, "api_key_env": FAKE_KEY_ENV}}}
    env = {"TUNELOOP_OPENAI_POLL_S": "0.2"}
    gw = GatewayProcess(config, tmp_path / "home", env={**env, "TUNELOOP_TRAINING_RUNNER": "0"})
    try:
        assert not [c for c in _children(gw.proc.pid) if "adapters.training.runner" in c]
        client = gw.client()
        with open(write_jsonl(tmp_path / "sft.jsonl", sft_rows()), "rb") as f:
            fid = client.files.create(file=f, purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=fid, suffix="queued")
        store = JobStore(db.create_engine(db.default_database_url(gw.home)))
        assert store.get(job.id)["worker_pid"] is None  # type: ignore[index]

        log = (tmp_path / "runner.log").open("wb")
        runner = subprocess.Popen([sys.executable, "-m", "gateway.cli", "jobs", "runner"], stdout=log,
                                  stderr=subprocess.STDOUT, env={**os.environ, **env, "TUNELOOP_HOME": str(gw.home),
                                                                 FAKE_KEY_ENV: FAKE_KEY, "HF_HUB_OFFLINE": "1"})
        try:
            deadline = time.time() + 90
            while (done := client.fine_tuning.jobs.retrieve(job.id)).status not in TERMINAL:
                assert time.time() < deadline and runner.poll() is None, (tmp_path / "runner.log").read_text()
                time.sleep(0.2)
            assert done.status == "succeeded", [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
            assert done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:tuneloop-test:queued:")
        finally:
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(timeout=30) == 0, (tmp_path / "runner.log").read_text()
            log.close()
        assert f"started fine-tuning job {job.id}" in (tmp_path / "runner.log").read_text()
    finally:
        gw.stop()


def test_a_cursor_from_another_project_tells_nothing(database_url: str, tmp_path: Path) -> None:
    """Issue 19 (low): ``after`` set to another project's job id paged differently from an unknown id."""
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    path = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    made = {}
    for p in ("mine", "theirs", "mine"):
        fid = store_file(engine, tmp_path, path.name, path.read_bytes(), "fine-tune", p)["id"]
        made.setdefault(p, []).append(create_job(engine, model="gpt-4o-mini-2024-07-18", training_file=fid,
                                                 project=p)["id"])
    store = JobStore(engine)
    try:
        unknown = store.list(after="ftjob-nope", project="mine")
        assert store.list(after=made["theirs"][0], project="mine") == unknown
        assert [j["id"] for j in store.list(after=made["mine"][1], project="mine")[0]] == made["mine"][:1]
    finally:
        for job_id in made["mine"] + made["theirs"]:
            cancel_job(engine, job_id)
