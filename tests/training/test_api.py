"""``/v1/files`` and ``/v1/fine_tuning/jobs`` through the real ``openai`` SDK against a real
gateway (``tuneloop serve``): local LoRA jobs (SFT, DPO) trained by worker processes, an
OpenAI job sent to the loopback fake, cancel, a malformed file; bodies checked against
OpenAI's spec."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.store import db
from gateway.store.jobs import JobStore
from tests.fakes.openai_finetune import FakeFineTuning
from tests.fixtures.gateway import FAKE_KEY_ENV, GatewayProcess
from tests.training.data import dpo_rows, malformed, sft_rows, write_jsonl
from tests.training.spec_check import validate

TERMINAL = ("succeeded", "failed", "cancelled")
UPLOAD_CAP = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def gw(fake_finetune: FakeFineTuning, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"targets": {"openai": {"kind": "openai", "base_url": fake_finetune.base_url,
                                     "api_key_env": FAKE_KEY_ENV}},
              "models": {"gpt": {"routes": [{"target": "openai", "model": "gpt-4o-mini"}]}}}
    gateway = GatewayProcess(config, tmp_path_factory.mktemp("ft-home"),
                             env={"TUNELOOP_OPENAI_POLL_S": "0.2", "TUNELOOP_TRAIN_THREADS": "1",
                                  "TUNELOOP_MAX_UPLOAD_BYTES": str(UPLOAD_CAP),
                                  "TUNELOOP_FILES_QUOTA_BYTES": str(2 * UPLOAD_CAP)})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> openai.OpenAI:
    return gw.client()


def _upload(client: openai.OpenAI, path: Path) -> str:
    with open(path, "rb") as f:
        created = client.files.create(file=f, purpose="fine-tune")
    return created.id


def _wait(client: openai.OpenAI, job_id: str, timeout: float = 240) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status}")


def _store(gw: GatewayProcess) -> JobStore:
    return JobStore(db.create_engine(db.default_database_url(gw.home)))


def test_files_create_list_retrieve_content_delete(client: openai.OpenAI, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", sft_rows())
    with open(path, "rb") as f:
        created = client.files.create(file=f, purpose="fine-tune")
    body = created.model_dump(exclude_unset=True)
    validate("OpenAIFile", body)
    assert body["bytes"] == path.stat().st_size and body["filename"] == "train.jsonl"
    listing = client.files.with_raw_response.list(purpose="fine-tune").http_response.json()
    validate("ListFilesResponse", listing)
    assert created.id in [f["id"] for f in listing["data"]]
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).read() == path.read_bytes()
    deleted = client.files.delete(created.id)
    validate("DeleteFileResponse", deleted.model_dump())
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_uploads_are_capped_and_streamed(client: openai.OpenAI, gw: GatewayProcess, tmp_path: Path) -> None:
    """Issue 19: a 3 MiB file (past the parser's 1 MiB in memory) lands whole; over the cap is a 413
    in OpenAI's envelope, whether the size is declared or the body is chunked."""
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"".join(b'{"messages": [{"role": "user", "content": "%d"}]}\n' % i for i in range(70_000)))
    assert 1 << 20 < big.stat().st_size < UPLOAD_CAP
    fid = _upload(client, big)
    assert client.files.content(fid).read() == big.read_bytes()
    second = _upload(client, big)  # two fit the project's quota (2 x the cap), a third does not
    with pytest.raises(openai.APIStatusError) as err, open(big, "rb") as f:
        client.files.create(file=f, purpose="fine-tune")
    assert err.value.status_code == 413 and "quota" in err.value.message
    client.files.delete(second)
    client.files.delete(fid)
    huge = tmp_path / "huge.jsonl"
    huge.write_bytes(b"x" * (UPLOAD_CAP + 1))
    with pytest.raises(openai.APIStatusError) as err, open(huge, "rb") as f:
        client.files.create(file=f, purpose="fine-tune")
    assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
    boundary = "b0undary"

    def chunked() -> Iterator[bytes]:  # no content-length: the cap counts the bytes as they come
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jsonl\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(UPLOAD_CAP // 65536 + 2):
            yield b"y" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = httpx.post(f"{gw.base_url}/files", content=chunked(), timeout=60,
                      headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large", resp.text


def _serve_once(engine: Any, name: str, path: Path) -> None:
    """The job's adapter name and folder are what the engine loads (``lora_name``, ``lora_path``)."""
    r = httpx.post(f"{engine.root_url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                   timeout=60)
    assert r.status_code == 200, r.text
    try:
        chat = openai.OpenAI(base_url=engine.base_url, api_key="x", max_retries=0).chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Refund window?"}], max_tokens=4, temperature=0)
        assert chat.model == name and chat.choices[0].message.content
    finally:
        httpx.post(f"{engine.root_url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=30)


def test_local_sft_and_dpo_jobs_train_adapters(client: openai.OpenAI, gw: GatewayProcess, tmp_path: Path,
                                               engine_server: Any) -> None:
    sft_file = _upload(client, write_jsonl(tmp_path / "sft.jsonl", sft_rows()))
    dpo_file = _upload(client, write_jsonl(tmp_path / "dpo.jsonl", dpo_rows()))
    hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5, "checkpoint_every": 1, "max_length": 48}
    sft = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=sft_file, suffix="Support Bot",
                                         method={"type": "supervised", "supervised": {"hyperparameters": hp}},
                                         metadata={"team": "support"})
    validate("FineTuningJob", sft.model_dump(exclude_unset=True))
    assert sft.status == "validating_files" and sft.fine_tuned_model is None
    dpo = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=dpo_file,
                                         method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}})
    for job_id in (sft.id, dpo.id):
        done = _wait(client, job_id)
        assert done.status == "succeeded", (done.error, _events(client, job_id))
        validate("FineTuningJob", done.model_dump(exclude_unset=True))
        assert done.fine_tuned_model and done.trained_tokens and done.finished_at
        folder = gw.home / "adapters" / done.fine_tuned_model
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "tuneloop.json").is_file()
        [row] = _store(gw).adapters_of(job_id)
        assert row["status"] == "candidate" and row["path"] == str(folder.resolve())
    done_sft = client.fine_tuning.jobs.retrieve(sft.id)
    assert done_sft.fine_tuned_model.startswith("smollm2-135m-instruct-ft-support-bot-")
    _serve_once(engine_server, done_sft.fine_tuned_model, gw.home / "adapters" / done_sft.fine_tuned_model)
    assert done_sft.method.supervised.hyperparameters.n_epochs == 2

    page = client.fine_tuning.jobs.with_raw_response.list(limit=1).http_response.json()
    validate("ListPaginatedFineTuningJobsResponse", page)
    assert page["has_more"] and len(page["data"]) == 1
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "support"})] == [sft.id]
    ids = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    assert ids.index(dpo.id) < ids.index(sft.id)  # newest first

    events = client.fine_tuning.jobs.with_raw_response.list_events(sft.id, limit=100).http_response.json()
    validate("ListFineTuningJobEventsResponse", events)
    steps = [e["data"]["step"] for e in events["data"] if e["type"] == "metrics"]
    assert steps == [2, 1]
    assert events["data"][0]["message"] == "The job has successfully completed"
    older = client.fine_tuning.jobs.list_events(sft.id, after=events["data"][0]["id"], limit=1)
    assert [e.id for e in older.data] == [events["data"][1]["id"]]

    ckpts = client.fine_tuning.jobs.checkpoints.with_raw_response.list(sft.id).http_response.json()
    validate("ListFineTuningJobCheckpointsResponse", ckpts)
    assert [c["step_number"] for c in ckpts["data"]] == [1]
    assert ckpts["data"][0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-1")
    assert "train_loss" in ckpts["data"][0]["metrics"]


def _events(client: openai.OpenAI, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50)]


def test_cancel_stops_the_job_and_publishes_nothing(client: openai.OpenAI, gw: GatewayProcess,
                                                    tmp_path: Path) -> None:
    fid = _upload(client, write_jsonl(tmp_path / "sft.jsonl", sft_rows()))
    job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=fid, suffix="gone")
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    validate("FineTuningJob", cancelled.model_dump(exclude_unset=True))
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    store = _store(gw)
    pid = store.get(job.id)["worker_pid"]
    deadline = time.time() + 60
    while pid and _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert store.adapters_of(job.id) == []
    assert not _published(gw, "-gone-")


def test_cancel_while_running_stops_between_steps(client: openai.OpenAI, gw: GatewayProcess,
                                                   tmp_path: Path) -> None:
    fid = _upload(client, write_jsonl(tmp_path / "sft.jsonl", sft_rows()))
    hp = {"n_epochs": 50, "batch_size": 2, "max_length": 32}
    job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=fid, suffix="midway",
                                         method={"type": "supervised", "supervised": {"hyperparameters": hp}})
    deadline = time.time() + 120
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=5)):
        assert time.time() < deadline, _events(client, job.id)
        time.sleep(0.3)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    store = _store(gw)
    pid = store.get(job.id)["worker_pid"]
    while pid and _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)
    messages = _events(client, job.id)
    assert "Training stopped: the job was cancelled" in messages
    assert sum(1 for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics") < 10
    assert store.adapters_of(job.id) == [] and store.get(job.id)["fine_tuned_model"] is None
    assert not _published(gw, "-midway-")


def _published(gw: GatewayProcess, marker: str) -> list[Path]:
    root = gw.home / "adapters"
    return [p for p in root.iterdir() if marker in p.name] if root.is_dir() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by the gateway) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_malformed_file_fails_the_job_naming_the_line(client: openai.OpenAI, gw: GatewayProcess,
                                                        tmp_path: Path) -> None:
    fid = _upload(client, malformed(tmp_path / "bad.jsonl"))
    job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=fid, suffix="broken")
    done = _wait(client, job.id, timeout=60)
    validate("FineTuningJob", done.model_dump(exclude_unset=True))
    assert done.status == "failed" and done.error and done.error.param == "training_file"
    assert "line 2" in done.error.message
    latest = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert latest.level == "error" and "line 2" in latest.message
    assert _store(gw).adapters_of(job.id) == []
    assert not _published(gw, "-broken-")


def test_an_openai_model_is_fine_tuned_at_openai(client: openai.OpenAI, tmp_path: Path) -> None:
    fid = _upload(client, write_jsonl(tmp_path / "sft.jsonl", sft_rows()))
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=fid, suffix="acme")
    done = _wait(client, job.id, timeout=60)
    assert done.status == "succeeded", _events(client, job.id)
    assert done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:tuneloop-test:acme:")
    assert "The job has successfully completed" in _events(client, job.id)


def test_bad_requests(client: openai.OpenAI, tmp_path: Path) -> None:
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file="file-nope")
    assert err.value.body["param"] == "training_file"  # type: ignore[index]
    fid = _upload(client, write_jsonl(tmp_path / "sft.jsonl", sft_rows()))
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=fid,
                                       method={"type": "reinforcement"})
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=fid, suffix="x" * 65)
