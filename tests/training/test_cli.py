"""``tuneloop finetune`` and ``tuneloop jobs list|show|cancel`` as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.training.data import malformed, sft_rows, write_jsonl


def tuneloop(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNELOOP_HOME": str(home), "HF_HUB_OFFLINE": "1", "TUNELOOP_TRAIN_THREADS": "1"}
    env.pop("TUNELOOP_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_finetune_wait_trains_an_adapter_and_jobs_show_it(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    run = tuneloop(tmp_path, "finetune", "--model", "smollm2-135m-instruct", "--training-file", str(data),
                   "--suffix", "cli", "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--wait")
    assert run.returncode == 0, run.stdout + run.stderr
    job_id, status, name = run.stdout.strip().splitlines()[-1].split()
    assert status == "succeeded" and name.startswith("smollm2-135m-instruct-ft-cli-")
    assert "New fine-tuned model created" in run.stdout + run.stderr
    assert (tmp_path / "adapters" / name / "adapter_model.safetensors").is_file()

    listed = tuneloop(tmp_path, "jobs", "list")
    assert job_id in listed.stdout and "succeeded" in listed.stdout
    shown = tuneloop(tmp_path, "jobs", "show", job_id)
    body = json.loads(shown.stdout[: shown.stdout.rindex("}") + 1])
    assert body["fine_tuned_model"] == name and body["object"] == "fine_tuning.job"
    cancel = tuneloop(tmp_path, "jobs", "cancel", job_id)
    assert cancel.returncode == 1 and "already succeeded" in cancel.stderr


def test_finetune_wait_on_a_malformed_file_fails_naming_the_line(tmp_path: Path) -> None:
    run = tuneloop(tmp_path, "finetune", "--model", "smollm2-135m-instruct", "--training-file",
                   str(malformed(tmp_path / "bad.jsonl")), "--wait", timeout=120)
    assert run.returncode == 1
    assert "line 2" in run.stdout and "failed" in run.stdout.strip().splitlines()[-1]
    assert not (tmp_path / "adapters").exists()


def test_a_killed_worker_is_resumed_from_its_checkpoint(tmp_path: Path) -> None:
    """Killed twice: resumed by ``tuneloop jobs resume``, then as ``tuneloop serve`` does at start for the
    embedded default (``resume_orphans``); each time from the newest checkpoint, never from zero."""
    import signal
    import time

    from adapters.training.service import resume_orphans
    from gateway.store import db
    from gateway.store.jobs import JobStore

    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    run = tuneloop(tmp_path, "finetune", "--model", "smollm2-135m-instruct", "--training-file", str(data),
                   "--suffix", "crash", "--epochs", "4", "--batch-size", "2", "--max-steps", "6",
                   "--checkpoint-every", "2", "--max-length", "32")
    job_id = run.stdout.split()[0]
    url = db.default_database_url(tmp_path)
    store = JobStore(db.create_engine(url))
    deadline = time.time() + 180

    def kill_after_checkpoint(n: int) -> None:
        while len(store.checkpoints(job_id)[0]) < n:
            assert time.time() < deadline and store.get(job_id)["status"] != "succeeded", store.events(job_id)
            time.sleep(0.2)
        os.kill(store.get(job_id)["worker_pid"], signal.SIGKILL)
        time.sleep(0.5)
        assert store.get(job_id)["status"] == "running"

    kill_after_checkpoint(1)
    resumed = tuneloop(tmp_path, "jobs", "resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    kill_after_checkpoint(2)
    assert resume_orphans(db.create_engine(url), url, tmp_path) == [job_id]
    assert resume_orphans(db.create_engine(url), url, tmp_path) == []  # its worker runs now
    while store.get(job_id)["status"] not in ("succeeded", "failed"):
        assert time.time() < deadline + 60
        time.sleep(0.3)
    job = store.get(job_id)
    messages = [e["message"] for e in store.events(job_id, limit=200)[0]]
    assert job["status"] == "succeeded", messages
    resumes = [m for m in messages if m.startswith("Resumed from checkpoint at step ")]
    assert sorted(resumes) == ["Resumed from checkpoint at step 2", "Resumed from checkpoint at step 4"], messages
    steps = [e["data"]["step"] for e in store.events(job_id, limit=200)[0] if e["type"] == "metrics"]
    assert max(steps) == 6 and len(steps) < 6 + 6  # not restarted from zero


def test_adapter_names_are_folder_names_whatever_names_the_base() -> None:
    from adapters.training.service import adapter_name

    assert adapter_name("smollm2-135m-instruct", "Support Bot!", "ftjob-0123456789abcdef") == \
        "smollm2-135m-instruct-ft-support-bot-89abcdef"
    # a base named by its Hugging Face id (what vLLM serves it as): no "/" in the folder
    assert adapter_name("HuggingFaceTB/SmolLM2-135M-Instruct", None, "ftjob-00000000deadbeef") == \
        "smollm2-135m-instruct-ft-deadbeef"
