"""The OpenAI backend end to end: the worker drives the real ``openai`` SDK against a
loopback server that follows OpenAI's files and fine-tuning API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.training import worker
from adapters.training.service import create_job, store_file
from gateway.store import db
from gateway.store.jobs import JobStore
from tests.fakes.openai_finetune import FakeFineTuning
from tests.training.data import dpo_rows, malformed, write_jsonl

KEY_ENV = "TUNELOOP_TEST_FT_KEY"


@pytest.fixture
def setup(database_url: str, tmp_path: Path, fake_finetune: FakeFineTuning,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    monkeypatch.setenv("TUNELOOP_OPENAI_POLL_S", "0")
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    return {"engine": engine, "url": database_url, "home": tmp_path,
            "openai": {"base_url": fake_finetune.base_url, "api_key_env": KEY_ENV}}


def _job(s: dict[str, Any], path: Path, **kw: Any) -> dict[str, Any]:
    fid = store_file(s["engine"], s["home"], path.name, path.read_bytes(), "fine-tune")["id"]
    return create_job(s["engine"], s["home"], s["url"], training_file=fid, openai=s["openai"], start=False, **kw)


def test_a_dpo_job_runs_at_openai_and_its_model_becomes_a_candidate(setup: dict[str, Any], tmp_path: Path,
                                                                     fake_finetune: FakeFineTuning) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", dpo_rows())
    job = _job(setup, path, model="gpt-4o-mini-2024-07-18", suffix="support",
               method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}})
    assert job["backend"] == "openai"
    assert worker.run(job["id"], setup["url"], setup["home"]) == 0
    store = JobStore(setup["engine"])
    done = store.get(job["id"])
    assert done is not None and done["status"] == "succeeded", done
    assert done["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:tuneloop-test:support:")
    assert done["external_id"] and done["trained_tokens"] == 1234
    [adapter] = store.adapters_of(job["id"])
    assert adapter["name"] == done["fine_tuned_model"] and adapter["status"] == "candidate"
    messages = [e["message"] for e in reversed(store.events(job["id"], limit=100)[0])]
    # OpenAI's own events are mirrored, in order, after ours
    assert messages.index("Fine-tuning job started") < messages.index("The job has successfully completed")
    assert any(m.startswith("Uploaded training file to OpenAI") for m in messages)
    seen = httpx.get(f"http://127.0.0.1:{fake_finetune.port}/_requests").json()
    upload = next(r for r in seen if r["path"] == "/v1/files" and r["filename"] == "pairs.jsonl")
    assert upload["purpose"] == "fine-tune"
    created = next(r["body"] for r in seen if r["path"] == "/v1/fine_tuning/jobs"
                   and r["body"]["training_file"] and r["body"].get("suffix") == "support")
    assert created["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}}
    assert created["model"] == "gpt-4o-mini-2024-07-18"


def test_a_bad_file_fails_the_job_with_openais_reason(setup: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    job = _job(setup, path, model="gpt-4o-mini-2024-07-18")
    assert worker.run(job["id"], setup["url"], setup["home"]) == 0
    store = JobStore(setup["engine"])
    done = store.get(job["id"])
    assert done is not None and done["status"] == "failed"
    assert done["error"]["param"] == "training_file" and "Line 2" in done["error"]["message"]
    assert store.adapters_of(job["id"]) == [] and done["fine_tuned_model"] is None
    levels = [e["level"] for e in store.events(job["id"])[0]]
    assert "error" in levels


def test_a_local_job_with_a_malformed_file_fails_at_validation(setup: dict[str, Any], tmp_path: Path) -> None:
    job = _job(setup, malformed(tmp_path / "bad.jsonl"), model="smollm2-135m-instruct", suffix="bad")
    assert job["backend"] == "local" and job["status"] == "validating_files"
    assert worker.run(job["id"], setup["url"], setup["home"]) == 0
    store = JobStore(setup["engine"])
    done = store.get(job["id"])
    assert done is not None and done["status"] == "failed", done
    assert done["error"]["param"] == "training_file"
    assert "line 2" in done["error"]["message"] and "'bot'" in done["error"]["message"]
    [last] = store.events(job["id"], limit=1)[0]
    assert last["level"] == "error" and last["data"]["line"] == 2
    assert store.adapters_of(job["id"]) == []
    assert not (setup["home"] / "adapters").exists() or not any((setup["home"] / "adapters").iterdir())
