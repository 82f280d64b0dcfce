"""The whole cycle on a small scale, against a real embedded gateway (engine + SQLite):
traffic -> feedback -> dataset -> local LoRA -> eval -> gate -> promote -> rollback,
a crash between stages, a worse candidate held back by the gate."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.loop.controller import due, run_cycle
from adapters.registry.promote import rollback
from adapters.registry.routes import current_entry
from gateway.store.cycles import CycleStore
from gateway.store.datasets import DatasetStore
from gateway.store.jobs import JobStore
from gateway.store.registry import AdapterRegistry
from tests.loop.conftest import ALIAS, GREETING, QUESTIONS, ask, settings

pytestmark = pytest.mark.slow


class Crash(Exception):
    pass


def _wait_feedback(env, n: int) -> None:
    deadline = time.time() + 30
    while not due(env.ws, ALIAS, settings())[0] and time.time() < deadline:
        time.sleep(0.3)
    assert due(env.ws, ALIAS, settings()) == (True, n)


def test_cycle_resumes_after_a_crash_then_promotes_and_rolls_back(loop_env):
    env = loop_env
    _wait_feedback(env, len(QUESTIONS))

    def crash_after_train(stage, state):
        if stage == "train":
            raise Crash("killed between train and eval")

    with pytest.raises(Crash):
        run_cycle(env.ws, ALIAS, settings(), after_stage=crash_after_train, progress=False)
    cycle = CycleStore(env.ws.engine).open_cycle(ALIAS)
    assert cycle is not None and cycle["stage"] == "train" and cycle["status"] == "running"
    job_id, dataset_id = cycle["state"]["job_id"], cycle["state"]["dataset_id"]

    done = run_cycle(env.ws, ALIAS, settings(), progress=False)  # resumes at eval
    assert done["id"] == cycle["id"] and done["status"] == "done", done
    assert done["state"]["job_id"] == job_id and done["state"]["dataset_id"] == dataset_id
    assert len(JobStore(env.ws.engine).list(limit=10)[0]) == 1  # trained once
    assert len(DatasetStore(env.ws.engine).list()) == 1  # built once
    ev = done["state"]["eval"]
    assert ev["candidate"]["score"] > ev["live"]["score"]

    adapter = AdapterRegistry(env.ws.engine).get(done["state"]["adapter_id"])
    assert adapter["status"] == "live" and adapter["metrics"]["eval"]["metric"] == "task"
    lineage = AdapterRegistry(env.ws.engine).lineage(adapter["id"])
    assert lineage["dataset"]["id"] == dataset_id and lineage["job"]["id"] == job_id
    # the alias now answers from the new adapter, in the house style
    q = QUESTIONS[0]
    reply = ask(env.gw, q)
    assert reply.choices[0].message.content.startswith(GREETING), reply.choices[0].message.content
    assert reply.choices[0].message.content != env.replies[q]

    # a worse candidate (a diverged run) is not promoted: the gate holds it back
    bad = run_cycle(env.ws, ALIAS, settings(learning_rate=2.0, max_steps=2, n_epochs=1),
                    force=True, progress=False)
    assert bad["status"] == "rejected", bad
    assert bad["state"]["gate"]["candidate"] < bad["state"]["gate"]["live"]
    assert AdapterRegistry(env.ws.engine).get(bad["state"]["adapter_id"])["status"] == "candidate"
    assert [r["model"] for r in current_entry(env.ws, ALIAS)["routes"]] == [adapter["name"]]
    assert ask(env.gw, q).choices[0].message.content == reply.choices[0].message.content

    # rollback restores the old answers in one step
    out = rollback(env.ws, ALIAS)
    assert out["gateway_applied"]
    assert ask(env.gw, q).choices[0].message.content == env.replies[q]
    assert AdapterRegistry(env.ws.engine).get(adapter["id"])["status"] == "retired"


def _canary(env, adapter_id: str, users: int, rate) -> tuple[object, dict]:
    """Run the loop's canary stage in a thread while simulated users send and rate traffic."""
    import threading

    from adapters.loop import release
    from adapters.loop.stages import Ctx, Rejected
    from tests.loop.conftest import feedback

    cfg = settings()
    cfg.canary = cfg.canary.model_copy(update={"percent": 50, "min_requests": 4, "min_ratings": 4,
                                               "poll_s": 0.5, "timeout_s": 120, "max_latency_ratio": 10})
    adapter = AdapterRegistry(env.ws.engine).get(adapter_id)
    cycle = CycleStore(env.ws.engine).create(ALIAS, "test-canary")
    ctx = Ctx(env.ws, ALIAS, cfg, cycle["id"], {"adapter_id": adapter_id, "adapter": adapter["name"]}, False)
    out: dict = {}

    def stage() -> None:
        try:
            out["result"] = release.canary(ctx)
        except Rejected as exc:
            out["rejected"] = exc

    t = threading.Thread(target=stage)
    t.start()
    deadline = time.time() + 30
    while len(current_entry(env.ws, ALIAS)["routes"]) != 2 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2.5)  # the gateway's route poll
    def user(i: int) -> None:
        reply = ask(env.gw, QUESTIONS[i % len(QUESTIONS)], user=f"user-{i}")
        feedback(env.gw, reply.id, rating=rate(reply.choices[0].message.content))

    with ThreadPoolExecutor(4) as pool:  # users at once, as they come: the engine batches them
        list(pool.map(user, range(users)))
    t.join(timeout=150)
    assert not t.is_alive()
    return adapter, out


def test_canary_analysis_decides_from_logged_arms(loop_env):
    env = loop_env
    reg = AdapterRegistry(env.ws.engine)
    good = [a for a in reg.list() if a["metrics"].get("eval", {}).get("candidate", {}).get("score", 0) > 0.5][0]
    bad = [a for a in reg.list() if a["id"] != good["id"]][0]

    def by_greeting(text: str) -> int:
        return 1 if text.startswith(GREETING) else -1

    # the house-style adapter against the base model: users prefer it -> promote
    adapter, out = _canary(env, good["id"], 24, by_greeting)
    assert "result" in out, out
    assert out["result"]["canary"]["decision"] == "promote"
    stats = out["result"]["canary"]["stats"]
    assert stats["candidate"]["rating_mean"] > stats["live"]["rating_mean"]
    from adapters.loop.release import promote_stage
    from adapters.loop.stages import Ctx

    promote_stage(Ctx(env.ws, ALIAS, settings(), "c", {"adapter_id": good["id"]}, False))
    assert reg.get(good["id"])["status"] == "live"

    # the diverged adapter against it: rated down -> automatic rollback to the live one
    adapter, out = _canary(env, bad["id"], 24, by_greeting)
    assert "rejected" in out and out["rejected"].status == "rolled_back", out
    assert "rating" in str(out["rejected"])
    assert [r["model"] for r in current_entry(env.ws, ALIAS)["routes"]] == [good["name"]]
    assert reg.get(bad["id"])["status"] == "retired"
    assert reg.get(good["id"])["status"] == "live"
