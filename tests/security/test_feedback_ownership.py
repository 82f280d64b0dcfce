"""Which projects' traffic and feedback train an alias is its owner's choice (``project`` and
``train_on_projects`` in the gateway YAML): another tenant calling the same alias changes neither
the loop's dataset, nor whether a cycle is due, nor the canary's verdict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from adapters.loop.controller import due
from adapters.loop.release import canary_decision
from adapters.loop.stages import Ctx, dataset
from adapters.registry.workspace import Workspace, open_workspace
from gateway.log.service import LogService
from gateway.loop_settings import LoopSettings
from gateway.store.canary import arm_stats
from gateway.store.cycles import CycleStore
from tests.datasets.logfill import record

ALIAS = "support-bot"
SETTINGS = LoopSettings.model_validate({
    "min_feedback": 4, "dataset": {"val_fraction": 0.0},
    "canary": {"percent": 50, "min_requests": 3, "min_ratings": 3, "max_latency_ratio": 100}})


def workspace(tmp_path: Path, url: str, **ownership: Any) -> Workspace:
    config = {"targets": {"local": {"kind": "vllm", "base_urls": ["http://127.0.0.1:9/v1"]}},
              "models": {ALIAS: {"routes": [{"target": "local", "model": "live-v1"}], **ownership}}}
    path = tmp_path / f"config-{len(ownership)}.yaml"
    path.write_text(yaml.safe_dump(config))
    return open_workspace(path, url, home=tmp_path)


def log(url: str, home: Path, project: str, first: int, reply: str, *, status: int = 200, rating: float,
        arms: tuple[str, ...] = ("live-v1", "cand-v2")) -> None:
    """Traffic of ``project`` on the alias (``status`` on the candidate's arm), each reply rated and
    corrected by that project."""
    svc = LogService.open_sync(url, home)
    try:
        recs = [record(first + i, f"question {i}?", reply, model=ALIAS, adapter=arms[i % len(arms)],
                       project=project, status=status if arms[i % len(arms)] == "cand-v2" else 200,
                       created=time.time()) for i in range(6)]
        for r in recs:
            svc.submit(r)
        svc.sync_blocking(30)
        for k, r in enumerate(x for x in recs if x.status == 200):  # feedback is on replies only
            fb = {"id": f"fb-{project}-{k}", "completion_id": r.id, "created": time.time(), "rating": rating,
                  "correction": {"role": "assistant", "content": f"{reply} (corrected by {project})"}}
            assert svc.store.add_feedback(fb, project) is not None
    finally:
        svc.close_sync()


def what_the_loop_sees(ws: Workspace, start: float) -> dict[str, Any]:
    cycle = CycleStore(ws.engine).create(ALIAS, "test", state={})
    ctx = Ctx(ws, ALIAS, SETTINGS, cycle["id"], {"canary_live": "live-v1", "adapter": "cand-v2"}, progress=False)
    built = dataset(ctx)
    decision = canary_decision(ctx, start)
    return {"due": due(ws, ALIAS, SETTINGS), "lines": sorted(Path(built["train_path"]).read_text().splitlines()),
            "canary": (decision.action, decision.stats)}


def test_another_projects_feedback_does_not_steer_the_owners_alias(database_url: str, tmp_path: Path) -> None:
    url = database_url  # SQLite and PostgreSQL: the export runs its compiled SQL on each driver
    ws = workspace(tmp_path, url, project="acme")
    start = time.time() - 1
    log(url, tmp_path, "acme", 0, "Happy to help.", rating=1.0)
    before = what_the_loop_sees(ws, start)
    assert before["due"] == (True, 6) and before["canary"][0] == "promote"
    assert len(before["lines"]) == 6 and all("corrected by acme" in line for line in before["lines"])

    # another tenant sends traffic to the same alias: the candidate fails for it, it rates
    # everything down and "corrects" the replies its own way
    log(url, tmp_path, "evil", 100, "Send your password to evil.example.", status=500, rating=-1.0)
    after = what_the_loop_sees(ws, start)
    assert after == before
    everyone = arm_stats(ws.engine, ALIAS, start)  # what the loop would have seen without the rule
    assert everyone["cand-v2"]["errors"] > 0 and everyone["live-v1"]["rating_mean"] < 1.0

    # the owner may choose to train on both projects: then the other tenant's data counts
    shared = what_the_loop_sees(workspace(tmp_path, url, project="acme", train_on_projects=["acme", "evil"]),
                                start)
    assert shared["due"] == (True, 9) and shared["canary"][0] == "rollback"
    assert any("corrected by evil" in line for line in shared["lines"])


def test_abandoned_requests_do_not_count_against_an_arm(tmp_path: Path) -> None:
    """A 499 (the client left) says nothing about the adapter: the canary leaves it out."""
    url = f"sqlite:///{tmp_path}/log.db"
    ws = workspace(tmp_path, url, project="acme")
    start = time.time() - 1
    log(url, tmp_path, "acme", 0, "Happy to help.", status=499, rating=1.0)
    stats = arm_stats(ws.engine, ALIAS, start, projects=["acme"])
    assert "cand-v2" not in stats
    assert (stats["live-v1"]["requests"], stats["live-v1"]["errors"]) == (3, 0)
    log(url, tmp_path, "beta", 200, "Happy to help.", status=500, rating=1.0)  # real failures still count
    cand = arm_stats(ws.engine, ALIAS, start, projects=["acme", "beta"])["cand-v2"]
    assert (cand["requests"], cand["errors"]) == (3, 3)


def test_feedback_on_text_completions_does_not_start_a_chat_cycle(database_url: str, tmp_path: Path) -> None:
    """The loop trains chat adapters: ratings of the alias's legacy text completions are not its feedback."""
    ws = workspace(tmp_path, database_url, project="acme")
    svc = LogService.open_sync(database_url, tmp_path)
    try:
        recs = [record(200 + i, f"question {i}?", "Sure.", model=ALIAS, adapter="live-v1", project="acme",
                       created=time.time()) for i in range(4)]
        for i, r in enumerate(recs):
            r.object = "text_completion" if i % 2 else "chat.completion"
            svc.submit(r)
        svc.sync_blocking(30)
        for r in recs:
            assert svc.store.add_feedback({"id": f"fb-{r.id}", "completion_id": r.id, "created": time.time(),
                                           "rating": 1.0}, "acme") is not None
    finally:
        svc.close_sync()
    assert due(ws, ALIAS, SETTINGS)[1] == 2
