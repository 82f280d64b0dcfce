"""The Kubernetes training Job runs: deploy/jobs/finetune.yaml's container command line, with its
``$(VAR)`` references expanded from its env as the kubelet does, run here against a small
local base and PostgreSQL. Only what a cluster provides is substituted: env values (the
ConfigMap's base model, the database Secret, DEVICE=cpu) and the mount paths."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.training.vllm_rules import check_vllm
from tests.deploy import kustomize
from tests.deploy.conftest import DEPLOY, container
from tests.fixtures.database import reset_postgres
from tests.training.data import sft_rows, write_jsonl

pytestmark = pytest.mark.postgres


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args (unknown references stay as they are)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def test_the_finetune_job_manifest_trains_marks_the_job_and_writes_where_vllm_looks(
        tiny_base: Path, postgres_database: str, tmp_path: Path) -> None:
    from gateway.store.datasets import DatasetRow, DatasetStore
    from gateway.store.db import create_engine, upgrade
    from gateway.store.jobs import JobStore

    job = kustomize.load_all(DEPLOY / "jobs" / "finetune.yaml")[0]
    c = container(job, "finetune")
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in c["volumeMounts"]}
    configmap = kustomize.load_all(DEPLOY / "base" / "gateway-configmap.yaml")[0]
    (mounts["/etc/tuneloop"]).mkdir(parents=True)
    (mounts["/etc/tuneloop"] / "config.yaml").write_text(configmap["data"]["config.yaml"])

    reset_postgres(postgres_database)
    db = create_engine(postgres_database)
    upgrade(db)  # the gateway migrates the schema on start; `tuneloop dataset build` then writes the dataset
    data = write_jsonl(_mkdir(mounts["/adapters"] / "datasets") / "support.jsonl", sft_rows())
    DatasetStore(db).create(DatasetRow(id="ds-manifest", name="support", kind="sft", path=str(data),
                                       rows=len(sft_rows()), sha256="-"))

    cluster = {  # what the cluster's ConfigMap, Secret and the template's edit provide
        "BASE_MODEL": "@@BASE@@", "TUNELOOP_DATABASE_URL": postgres_database, "DATASET": "ds-manifest",
        "DEVICE": "cpu"}
    env: dict[str, str] = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = _expand(e["value"], env)
        elif e["name"] in cluster:
            env[e["name"]] = cluster[e["name"]]
    env.update({k: v for k, v in cluster.items() if k in env})  # the template's values the user edits
    argv = [_expand(a, env) for a in [*c["command"], *c["args"]]]
    argv, env = _local_paths(argv, mounts), {k: _local_paths([v], mounts)[0] for k, v in env.items()}
    # the base's folder is local already: put it in after the mounts are mapped, so a checkout under
    # a mounted path (the Job mounts /tmp) is not rewritten
    argv = [a.replace("@@BASE@@", str(tiny_base)) for a in argv]
    env = {k: v.replace("@@BASE@@", str(tiny_base)) for k, v in env.items()}
    argv[0] = str(Path(sys.executable).parent / argv[0])  # the image's `tuneloop` on PATH
    run_env = {**os.environ, **env, "HF_HUB_OFFLINE": "1", "TUNELOOP_TRAIN_THREADS": "1"}
    started = time.time()
    run = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (argv, run.stdout[-3000:], run.stderr[-3000:])

    name = env["ADAPTER_NAME"]
    out = mounts["/adapters"] / name
    assert check_vllm(out, 16, base_model=str(tiny_base)) == []  # vLLM's resolver: <cache dir>/<name>, same base
    [row] = JobStore(db).list(limit=5)[0]
    assert row["status"] == "succeeded" and row["fine_tuned_model"] == name and row["dataset_id"] == "ds-manifest"
    assert row["created"] >= started - 1 and row["backend"] == "local"
    meta = json.loads((out / "tuneloop.json").read_text())
    assert meta["dataset"]["path"] == str(data) and meta["base_model"]["path"] == str(tiny_base)
    db.dispose()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _local_paths(values: list[str], mounts: dict[str, Path]) -> list[str]:
    """Each mount path (at the start of a value or after ``=``) to its local folder, in one pass."""
    alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(^|=)({alternatives})(?=/|$)")
    return [pattern.sub(lambda m: m[1] + str(mounts[m[2]]), v) for v in values]
