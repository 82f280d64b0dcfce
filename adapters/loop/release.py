"""The release stages: evaluate the candidate, gate it, canary it, promote it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from adapters.loop.stages import Ctx, Rejected
from gateway.store.cycles import CycleStore


def evaluate(ctx: Ctx) -> dict[str, Any]:
    from adapters.evaluation import checks, data, report
    from adapters.evaluation.runner import evaluate as run_eval
    from adapters.registry.promote import register_eval_alias
    from gateway.store.registry import AdapterRegistry

    e = ctx.cfg.eval
    adapter = AdapterRegistry(ctx.ws.engine).get(ctx.state["adapter_id"])
    assert adapter is not None
    name = register_eval_alias(ctx.ws, adapter, ctx.alias)
    source = str(e.data) if e.data else ctx.state["val_path"]
    examples = data.load_file(Path(source), e.limit)
    if not examples:
        raise Rejected("rejected", f"no held-out examples in {source}")
    ctx.say(f"evaluating {name} vs {ctx.alias} on {len(examples)} held-out examples")
    result = run_eval(ctx.ws.gateway_url, {"live": ctx.alias, "candidate": name}, examples,
                      run_checks=[checks.parse(c) for c in e.checks], max_tokens=e.max_tokens,
                      judge_model=e.judge, api_key=ctx.ws.api_key, progress=ctx.progress)
    png = report.plot(result, ctx.folder / "eval.png", f"{name[-30:]} vs {ctx.alias}")
    rec = report.record(result, ctx.state.get("dataset_id"), png)
    report.store(ctx.ws.engine, name, rec)
    ctx.say("\n" + report.table(result))
    return {"eval": rec}


def gate(ctx: Ctx) -> dict[str, Any]:
    rec = ctx.state["eval"]
    cand, live = rec["candidate"]["score"] or 0.0, rec["live"]["score"] or 0.0
    need = live + ctx.cfg.eval.min_delta
    verdict = {"metric": rec["metric"], "candidate": cand, "live": live, "min_delta": ctx.cfg.eval.min_delta,
               "passed": cand > need and rec["candidate"]["errors"] <= rec["live"]["errors"]}
    ctx.say(f"gate on {rec['metric']}: candidate {cand:.3f} vs live {live:.3f} -> "
            + ("pass" if verdict["passed"] else "REJECTED"))
    if not verdict["passed"]:
        CycleStore(ctx.ws.engine).update_state(ctx.cycle_id, {"gate": verdict})
        raise Rejected("rejected", f"gate: candidate {cand:.3f} does not beat live {live:.3f} "
                                   f"by more than {ctx.cfg.eval.min_delta}")
    return {"gate": verdict}


def canary_decision(ctx: Ctx, start: float) -> Any:
    """The canary's verdict on the traffic since ``start``: only the projects that may train the
    alias count (adapters.loop.ownership), so another tenant cannot force or block a promotion."""
    from adapters.loop.canary import decide
    from gateway.store.canary import arm_stats

    stats = arm_stats(ctx.ws.engine, ctx.alias, start, projects=ctx.projects)
    return decide(stats, ctx.state["canary_live"], ctx.state["adapter"], ctx.cfg.canary)


def canary(ctx: Ctx) -> dict[str, Any]:
    from adapters.registry.promote import promote, rollback
    from adapters.registry.routes import current_entry, live_route

    c = ctx.cfg.canary
    if c.percent <= 0:
        return {"canary": {"skipped": True}}
    start = ctx.state.get("canary_start")
    if start is None:
        live_model = live_route(current_entry(ctx.ws, ctx.alias))["model"]
        promote(ctx.ws, ctx.state["adapter_id"], ctx.alias, canary=c.percent, reason=f"loop {ctx.cycle_id}")
        start = time.time()
        CycleStore(ctx.ws.engine).update_state(ctx.cycle_id, {"canary_start": start, "canary_live": live_model})
        ctx.state.update(canary_start=start, canary_live=live_model)
        ctx.say(f"canary: {c.percent:g}% of {ctx.alias} on {ctx.state['adapter']}")
    while True:
        d = canary_decision(ctx, start)
        if d.action == "wait" and time.time() - start < c.timeout_s:
            time.sleep(c.poll_s)
            continue
        if d.action != "promote":
            rollback(ctx.ws, ctx.alias, reason="canary: " + "; ".join(d.reasons))
            CycleStore(ctx.ws.engine).update_state(ctx.cycle_id, {"canary": {"decision": d.action,
                                                                              "reasons": d.reasons,
                                                                              "stats": d.stats}})
            raise Rejected("rolled_back", "canary: " + "; ".join(d.reasons or ["timed out"]))
        ctx.say("canary passed: " + "; ".join(d.reasons))
        return {"canary": {"decision": d.action, "reasons": d.reasons, "stats": d.stats}}


def promote_stage(ctx: Ctx) -> dict[str, Any]:
    from adapters.registry.promote import promote

    out = promote(ctx.ws, ctx.state["adapter_id"], ctx.alias, reason=f"loop {ctx.cycle_id}")
    ctx.say(f"promoted {out['adapter']}: {ctx.alias} now routes to it")
    return {"promoted": out["adapter"], "promoted_at": time.time()}
