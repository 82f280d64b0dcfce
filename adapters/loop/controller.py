"""The loop controller: one cycle per call of ``run_cycle``, persisted stage by stage.

    cycle = run_cycle(ws, "support-bot", settings)   # None: not enough new feedback yet

Stages: dataset -> train -> eval -> gate -> canary -> promote. After each, the cycle's row
records it as finished together with what it produced, in one write. Re-running after a
crash (or an exception) picks the unfinished cycle up and continues after its last finished
stage: a built dataset is not rebuilt, a training job is followed or resumed, not started
again. A cycle starts when ``min_feedback`` new feedback rows arrived since the last one.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from adapters.loop import release, stages
from adapters.loop.config import LoopSettings
from adapters.loop.stages import Ctx, NotYet, Rejected
from adapters.registry.workspace import Workspace
from gateway.store.cycles import CycleStore, feedback_count

STAGES: list[tuple[str, Callable[[Ctx], dict[str, Any]]]] = [
    ("dataset", stages.dataset), ("train", stages.train), ("eval", release.evaluate),
    ("gate", release.gate), ("canary", release.canary), ("promote", release.promote_stage),
]
NAMES = [name for name, _ in STAGES]


def due(ws: Workspace, alias: str, cfg: LoopSettings) -> tuple[bool, int]:
    """Enough new feedback (from the projects that may train ``alias``) since the last cycle began?"""
    from adapters.loop.ownership import training_projects

    last = CycleStore(ws.engine).last_finished(alias)
    n = feedback_count(ws.engine, alias, since=last["created"] if last else None,
                       projects=training_projects(ws, alias))
    return n >= cfg.min_feedback, n


def run_cycle(ws: Workspace, alias: str, cfg: LoopSettings, *, force: bool = False, progress: bool = True,
              after_stage: Callable[[str, dict[str, Any]], None] | None = None,
              stages_: list[tuple[str, Callable[[Ctx], dict[str, Any]]]] | None = None,
              kind: str = "loop") -> dict[str, Any] | None:
    """Run (or resume) one cycle; ``stages_``/``kind`` let ``migrate`` reuse the machinery."""
    plan = stages_ or STAGES
    names = [name for name, _ in plan]
    store = CycleStore(ws.engine)
    cycle = store.open_cycle(alias, kind)
    if cycle is None:
        ready, n = due(ws, alias, cfg)
        if not (ready or force):
            return None
        cycle = store.create(alias, kind, state={"feedback": n})
    ctx = Ctx(ws, alias, cfg, cycle["id"], dict(cycle["state"] or {}), progress)
    done = names.index(cycle["stage"]) + 1 if cycle["stage"] else 0
    if done:
        ctx.say(f"resuming {cycle['id']} after stage {cycle['stage']!r}")
    for name, func in plan[done:]:
        t0 = time.time()
        try:
            produced = func(ctx)
        except NotYet as exc:
            ctx.say(f"cycle {cycle['id']} waits in stage {name!r}: {exc}")
            return store.get(cycle["id"])
        except Rejected as exc:
            store.end(cycle["id"], exc.status, str(exc))
            ctx.say(f"cycle {cycle['id']} {exc.status}: {exc}")
            return store.get(cycle["id"])
        except BaseException as exc:
            store.note_error(cycle["id"], f"{name}: {exc}\n{traceback.format_exc()}")
            raise
        ctx.state = store.finish_stage(cycle["id"], name, {**produced, f"{name}_s": round(time.time() - t0, 1)})
        if after_stage is not None:
            after_stage(name, ctx.state)
    store.end(cycle["id"], "done")
    return store.get(cycle["id"])
