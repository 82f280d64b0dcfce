"""Every command finds the config and the database as ``serve`` does: a YAML that names
PostgreSQL is enough, with no environment variable (issue: one way to reach the database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.datasets.logfill import fill, record
from tests.fixtures.database import reset_postgres

pytestmark = pytest.mark.postgres


def _tuneloop(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELOOP_") or k == "TUNELOOP_MODEL_CACHE"}
    env["TUNELOOP_HOME"] = str(home)  # its SQLite stays empty: reading it would find nothing
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def pg_config(postgres_database: str, tmp_path: Path) -> Path:
    reset_postgres(postgres_database)
    now = time.time()
    records = [record(i, f"question {i}?", f"answer {i}.", model="bot", project="default", created=now - 10 - i)
               for i in range(6)]
    records.append(record(99, "an old one?", "old.", model="bot", project="default", created=now - 5 * 86_400))
    fill(postgres_database, tmp_path / "fill-home", records,
         [{"completion_id": f"chatcmpl-{i}", "rating": 1.0} for i in range(3)])
    cfg = tmp_path / "tuneloop.yaml"
    cfg.write_text(yaml.safe_dump({
        "database_url": postgres_database,
        "targets": {"local": {"kind": "vllm", "base_urls": ["http://127.0.0.1:9/v1"]}},
        "models": {"bot": {"routes": [{"target": "local", "model": "bot"}]}},
        "loop": {"bot": {"min_feedback": 50}},
    }))
    return cfg


def test_dataset_build_reads_the_configs_database(pg_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "set.jsonl"
    r = _tuneloop("dataset", "build", "--config", str(pg_config), "--format", "sft", "--out", str(out),
                  "--val-fraction", "0", home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7


def test_loop_reads_its_section_and_the_configs_database(pg_config: Path, tmp_path: Path) -> None:
    r = _tuneloop("loop", "--model", "bot", "--once", "--config", str(pg_config), home=tmp_path / "home")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bot: 3/50 new feedback" in r.stdout + r.stderr  # min_feedback from the loop: section


def test_jobs_list_reads_the_configs_database(pg_config: Path, postgres_database: str, tmp_path: Path) -> None:
    from gateway.store import db
    from gateway.store.jobs import JobStore

    engine = db.create_engine(postgres_database)
    try:
        JobStore(engine).create({"id": "ftjob-from-config", "model": "smollm2-135m-instruct", "backend": "local",
                                 "status": "queued", "training_file": "file-x", "project": "default"})
    finally:
        engine.dispose()
    r = _tuneloop("jobs", "list", "--config", str(pg_config), home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "ftjob-from-config" in r.stdout


def test_log_prune(pg_config: Path, tmp_path: Path) -> None:
    r = _tuneloop("log", "prune", "--older-than", "1d", "--config", str(pg_config), home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "deleted 1 interactions" in r.stdout
    bad = _tuneloop("log", "prune", "--older-than", "soon", "--config", str(pg_config), home=tmp_path / "home")
    assert bad.returncode != 0 and "unit" in bad.stdout + bad.stderr


def test_loop_section_is_strict(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"loop": {"bot": {"min_feedbak": 5}}}))
    r = _tuneloop("loop", "--model", "bot", "--once", "--config", str(cfg), home=tmp_path / "home")
    assert r.returncode != 0 and "min_feedbak" in r.stdout + r.stderr
