"""Issue 19: a customer can be forgotten end to end, and the audit trail says who did what.

Traffic from two end users goes through the gateway, with feedback, and into a dataset; then the
admin route forgets one user and ``DELETE /v1/chat/completions/{id}`` erases one completion of the
other. Their rows and feedback are gone, the other rows stay, the old dataset is marked stale, a new
build holds only what is left, and the audit trail lists the key created, the forget (with a hash of
the user, not the user) and the deletion.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from gateway.job_queue import JobError, create_job
from gateway.store import db
from gateway.store.datasets import DatasetStore
from tests.fixtures.gateway import GatewayProcess, fake_config


def tuneloop(gw: GatewayProcess, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNELOOP_HOME": str(gw.home)}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--database-url", database_url],
                          env=env, capture_output=True, text=True, timeout=120, check=True)


def test_forget_a_user_end_to_end(database_url: str, fake_upstream, tmp_path: Path) -> None:
    gw = GatewayProcess({**fake_config(fake_upstream), "database_url": database_url}, tmp_path / "home",
                        env={"TUNELOOP_AUTH": "required"})
    try:
        admin = gw.make_key("--project", "ops", "--admin")
        client = gw.client(api_key=admin)
        made = {u: [client.chat.completions.create(
            model="lora-bot", messages=[{"role": "user", "content": f"{u}: where is parcel {i}?"}], user=u).id
            for i in range(2)] for u in ("alice", "bob")}
        for cid in made["alice"] + made["bob"]:
            r = httpx.post(f"{gw.base_url}/feedback", headers={"Authorization": f"Bearer {admin}"}, timeout=10,
                           json={"completion_id": cid, "rating": -1, "correction": f"Hi! {cid} ships today."})
            assert r.status_code == 200, r.text
        built = json.loads(tuneloop(gw, database_url, "dataset", "build", "--out", str(tmp_path / "before.jsonl"),
                                    "--val-fraction", "0", "--json", "--no-progress").stdout)
        assert built["written"]["train"] >= 1

        auth = {"Authorization": f"Bearer {admin}"}
        forgot = httpx.post(f"{gw.base_url}/admin/forget", json={"user": "alice"}, headers=auth, timeout=30)
        assert forgot.status_code == 200, forgot.text
        assert forgot.json()["completions"] == 2 and forgot.json()["feedback"] == 2
        assert forgot.json()["datasets_stale"] == [built["dataset_id"]]
        client.chat.completions.delete(made["bob"][0])  # one completion, the same path
        for cid in made["alice"] + made["bob"][:1]:
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.retrieve(cid)
        assert client.chat.completions.retrieve(made["bob"][1]).id == made["bob"][1]
        anyone = httpx.post(f"{gw.base_url}/admin/forget", json={"user": "bob"}, timeout=10,
                            headers={"Authorization": f"Bearer {gw.make_key('--project', 'p')}"})
        assert anyone.status_code == 403  # admins only
    finally:
        gw.stop()

    engine = db.create_engine(database_url)
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT completion_id FROM feedback")).scalars().all()
    assert left == [made["bob"][1]]
    assert DatasetStore(engine).get(built["dataset_id"])["stale"]["reason"] == "user.forget"
    with pytest.raises(JobError, match="erased"):  # it trains nothing until it is built again
        create_job(engine, model="smollm2-135m-instruct", dataset_id=built["dataset_id"], allow_paths=True)
    after = json.loads(tuneloop(gw, database_url, "dataset", "build", "--out", str(tmp_path / "after.jsonl"),
                                "--val-fraction", "0", "--json", "--no-progress").stdout)
    assert json.loads(tuneloop(gw, database_url, "dataset", "show", after["dataset_id"], "--ids").stdout
                      )["source_ids"] == [made["bob"][1]]

    trail = json.loads(tuneloop(gw, database_url, "audit", "--json").stdout)
    actions = [(r["action"], r["target"]) for r in trail]
    assert ("user.forget", "sha256:" + hashlib.sha256(b"alice").hexdigest()) in actions
    assert ("completion.delete", made["bob"][0]) in actions
    assert [a for a, _ in actions].count("key.create") == 2
    assert "alice" not in json.dumps(trail)
