"""Migration off an OpenAI fine-tune: the alias's own traffic trains a local adapter, which
shadows the ``ft:`` model on live traffic until the comparison says it can take over.

Stages (a ``loop_cycles`` row of kind ``migrate``, resumable like the loop's):
dataset (every good reply the ``ft:`` model served, corrections first) -> train (local LoRA
on ``--to``) -> shadow (the alias's database entry gains ``shadow: {model: <adapter>}``) ->
compare (agreement = mean chrF between primary and shadow replies; ratings side by side;
waits, leaving the cycle open, until ``min_pairs`` shadowed requests) -> cutover (the
shadow removed; the alias promoted to the adapter when agreement >= ``min_agreement`` and
the shadow's error rate is no worse; ``tuneloop rollback ALIAS`` returns it to ``ft:``).

``retirement`` says when OpenAI retires the alias's ``ft:`` model (``gateway.retirements``): the
report opens with it, so the date to finish by is in front of whoever migrates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from adapters.loop import stages
from adapters.loop.config import LoopSettings
from adapters.loop.stages import Ctx, NotYet, Rejected
from adapters.registry.workspace import Workspace
from gateway.retirements import FINE_TUNING_ENDS, earliest_shutdown, shutdown_date
from gateway.store.cycles import CycleStore


@dataclass
class MigrateSettings:
    target: str | None = None
    min_pairs: int = 20
    min_agreement: float = 0.5
    wait_s: float = 0.0


def retirement(ws: Workspace, alias: str) -> dict[str, Any] | None:
    """The alias's ``ft:`` models that OpenAI retires and when (None: none of its routes retires)."""
    from adapters.registry.routes import current_entry

    models = [r["model"] for r in current_entry(ws, alias).get("routes", [])]
    shutdown = earliest_shutdown(models)
    if shutdown is None:
        return None
    retiring = [m for m in models if shutdown_date(m) is not None]
    return {"shutdown_date": shutdown.isoformat(), "fine_tuning_ends": FINE_TUNING_ENDS.isoformat(),
            "models": retiring,
            "line": f"{', '.join(retiring)}: OpenAI stops new fine-tuning jobs on {FINE_TUNING_ENDS.isoformat()} "
                    f"and shuts the model down on {shutdown.isoformat()}; migrate before then"}


def _target(ctx: Ctx, ms: MigrateSettings) -> str:
    if ms.target:
        return ms.target
    for name, t in ctx.ws.config.targets.items():
        if t.kind == "vllm":
            return name
    raise Rejected("failed", "no vLLM target in the config to serve the local adapter")


def shadow(ctx: Ctx, ms: MigrateSettings) -> dict[str, Any]:
    from adapters.registry.promote import register_eval_alias
    from adapters.registry.routes import current_entry, write
    from gateway.store.registry import AdapterRegistry, RouteHistory

    adapter = AdapterRegistry(ctx.ws.engine).get(ctx.state["adapter_id"])
    assert adapter is not None
    target = _target(ctx, ms)
    name = register_eval_alias(ctx.ws, adapter, ctx.alias, target=target)
    before = current_entry(ctx.ws, ctx.alias)
    after = {**before, "shadow": {"model": name, "share": 1.0}}
    write(ctx.ws, ctx.alias, after)
    RouteHistory(ctx.ws.engine).add(ctx.alias, "shadow", before=before, after=after, restore=None,
                                    adapter_id=adapter["id"], reason=f"migrate {ctx.cycle_id}")
    ctx.say(f"{name} now shadows {ctx.alias} on every request")
    return {"shadow_start": time.time(), "target": target, "unshadowed": before}


def compare(ctx: Ctx, ms: MigrateSettings) -> dict[str, Any]:
    from adapters.evaluation.similarity import chrf
    from gateway.store.canary import shadow_pairs

    deadline = time.time() + ms.wait_s
    while True:
        pairs = [p for p in shadow_pairs(ctx.ws.engine, ctx.alias, ctx.state["shadow_start"], projects=ctx.projects)
                 if p["status"] == 200]
        if len(pairs) >= ms.min_pairs or time.time() >= deadline:
            break
        time.sleep(2.0)
    if len(pairs) < ms.min_pairs:
        raise NotYet(f"{len(pairs)}/{ms.min_pairs} shadowed requests so far; run again later")
    sims, shadow_errors = [], 0
    for p in pairs:
        if p["shadow_status"] != 200:
            shadow_errors += 1
            continue
        sims.append(chrf(_reply(p["shadow_response"]), _reply(p["response"])))
    rated = [p["rating"] for p in pairs if p["rating"] is not None]
    report = {"pairs": len(pairs), "agreement": sum(sims) / len(sims) if sims else 0.0,
              "shadow_error_rate": shadow_errors / len(pairs), "primary_rating_mean":
              sum(rated) / len(rated) if rated else None, "rated": len(rated)}
    lines = [f"shadow comparison on {report['pairs']} live requests:",
             f"  agreement (chrF primary vs shadow) {report['agreement']:.3f} (need {ms.min_agreement})",
             f"  shadow error rate {report['shadow_error_rate']:.3f}; primary rating mean "
             f"{report['primary_rating_mean'] if rated else '-'} over {len(rated)} ratings"]
    for line in lines:
        ctx.say(line)
    return {"comparison": report, "report_lines": lines}


def _reply(response: Any) -> str:
    try:
        return str(response["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        return ""


def cutover(ctx: Ctx, ms: MigrateSettings) -> dict[str, Any]:
    from adapters.registry.promote import promote
    from adapters.registry.routes import write

    write(ctx.ws, ctx.alias, ctx.state["unshadowed"])  # the shadow ends either way
    rep = ctx.state["comparison"]
    if rep["agreement"] < ms.min_agreement or rep["shadow_error_rate"] > 0.0:
        CycleStore(ctx.ws.engine).update_state(ctx.cycle_id, {"cutover": False})
        raise Rejected("rejected", f"agreement {rep['agreement']:.3f} < {ms.min_agreement} or shadow errors")
    out = promote(ctx.ws, ctx.state["adapter_id"], ctx.alias, target=ctx.state["target"],
                  reason=f"migrate {ctx.cycle_id}")
    ctx.say(f"{ctx.alias} cut over to {out['adapter']} (tuneloop rollback {ctx.alias} undoes it)")
    return {"cutover": True, "promoted": out["adapter"]}


def run_migration(ws: Workspace, alias: str, cfg: LoopSettings, ms: MigrateSettings,
                  progress: bool = True) -> dict[str, Any]:
    from adapters.loop.controller import run_cycle

    plan = [("dataset", stages.dataset), ("train", stages.train),
            ("shadow", lambda c: shadow(c, ms)), ("compare", lambda c: compare(c, ms)),
            ("cutover", lambda c: cutover(c, ms))]
    cycle = run_cycle(ws, alias, cfg, force=True, progress=progress, stages_=plan, kind="migrate")
    assert cycle is not None
    return cycle
