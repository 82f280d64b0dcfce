"""`tuneloop migrate`'s report names the date OpenAI retires the alias's `ft:` model (the real CLI,
as a subprocess, on a SQLite database with no traffic yet: the migration itself stops at its
dataset, which is empty)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

CONFIG = {
    "targets": {"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "UNSET_KEY"},
                "local": {"kind": "vllm", "base_urls": ["http://127.0.0.1:9/v1"]}},
    "models": {
        "gpt-support": {"routes": [{"target": "openai", "model": "ft:gpt-4.1-mini-2025-04-14:acme::abc", "weight": 90},
                                   {"target": "local", "model": "support-v2", "weight": 10}]},
        "legacy": {"routes": [{"target": "openai", "model": "ft:gpt-3.5-turbo-0125:acme::old"}]},
    },
}


def _migrate(tmp_path: Path, alias: str) -> list[str]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "TUNELOOP_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "migrate", "--from", alias, "--config", str(config),
                           "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_migrate_reports_the_shutdown_of_the_ft_model(tmp_path):
    lines = _migrate(tmp_path, "gpt-support")
    assert lines[0] == ("ft:gpt-4.1-mini-2025-04-14:acme::abc: OpenAI stops new fine-tuning jobs on 2027-01-06 "
                        "and shuts the model down on 2027-01-14; migrate before then")
    summary = json.loads(next(line for line in lines if line.startswith("{")))
    assert summary["shutdown_date"] == "2027-01-14"
    assert (summary["status"], summary["error"]) == ("rejected", "the dataset has no training lines")


def test_migrate_of_a_model_without_an_announced_shutdown(tmp_path):
    lines = _migrate(tmp_path, "legacy")
    assert not any("shuts the model down" in line for line in lines)
    summary = json.loads(next(line for line in lines if line.startswith("{")))
    assert summary["shutdown_date"] is None
