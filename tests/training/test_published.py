"""``fine_tuned_model`` is callable at once, on every replica, as on OpenAI: a job made through
replica A (PostgreSQL shared by two ``tuneloop serve`` processes) is answered through replica
B the moment the job says ``succeeded``, the adapter loaded on demand into the engine serving
its base; ``client.models.delete`` (the job's project only) takes it away everywhere."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.database import reset_postgres
from tests.fixtures.gateway import GatewayProcess
from tests.training.data import sft_rows, write_jsonl

pytestmark = pytest.mark.postgres
MSG = [{"role": "system", "content": "Support bot."}, {"role": "user", "content": "Refund window?"}]


def _engine_models(engine_server: Any) -> set[str]:
    return {c["id"] for c in httpx.get(f"{engine_server.base_url}/models", timeout=10).json()["data"]}


def test_a_job_through_replica_a_is_answered_through_replica_b_and_deleted_everywhere(
        engine_server: Any, postgres_database: str, tmp_path: Path) -> None:
    from gateway.store.db import create_engine, upgrade
    from gateway.store.keys import KeyStore

    reset_postgres(postgres_database)
    db = create_engine(postgres_database)
    upgrade(db)
    keys = KeyStore(db)
    acme, other = keys.create("acme")[1], keys.create("other")[1]
    config = {"database_url": postgres_database, "models": {},
              "targets": {"local": {"kind": "vllm", "base_urls": [engine_server.base_url], "timeout_s": 120}}}
    env = {"TUNELOOP_TRAIN_THREADS": "1"}
    a, b = (GatewayProcess(config, tmp_path / f"replica-{i}", env=env) for i in "ab")
    try:
        ca, cb = a.client(api_key=acme), b.client(api_key=acme)
        with open(write_jsonl(tmp_path / "sft.jsonl", sft_rows()), "rb") as f:
            fid = ca.files.create(file=f, purpose="fine-tune").id
        hp = {"n_epochs": 1, "batch_size": 4, "max_steps": 1, "max_length": 48}
        job = ca.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=fid, suffix="xrep",
                                         method={"type": "supervised", "supervised": {"hyperparameters": hp}})
        deadline = time.time() + 300
        while (done := cb.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            assert time.time() < deadline, done.status
            time.sleep(0.3)
        assert done.status == "succeeded", [e.message for e in cb.fine_tuning.jobs.list_events(job.id)]
        ft = done.fine_tuned_model
        # at once, through the replica that did not take the job
        assert ft in {m.id for m in cb.models.list()} and cb.models.retrieve(ft).id == ft
        assert ft not in _engine_models(engine_server)  # loaded on demand, by the first request
        reply = cb.chat.completions.create(model=ft, messages=MSG, max_tokens=4, temperature=0)
        assert reply.choices[0].message.content and ft in _engine_models(engine_server)
        assert ca.chat.completions.create(model=ft, messages=MSG, max_tokens=4, temperature=0).choices

        with pytest.raises(openai.NotFoundError):  # another project's key: as if it did not exist
            b.client(api_key=other).models.delete(ft)
        deleted = cb.models.delete(ft)
        assert deleted.model_dump() == {"id": ft, "object": "model", "deleted": True}
        with pytest.raises(openai.NotFoundError):  # at once on the replica that deleted it
            cb.models.retrieve(ft)
        assert ft not in _engine_models(engine_server)  # unloaded from the engine
        deadline = time.time() + 5
        while ft in {m.id for m in ca.models.list()}:  # the other replica: within its 2 s poll
            assert time.time() < deadline, "replica A never dropped the deleted model"
            time.sleep(0.2)
        with pytest.raises(openai.NotFoundError):
            ca.chat.completions.create(model=ft, messages=MSG, max_tokens=4)
        with pytest.raises(openai.NotFoundError):  # deleted already
            ca.models.delete(ft)
        assert cb.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == ft  # the job keeps its record
    finally:
        for gw in (a, b):
            gw.stop()
        db.dispose()
