"""``tuneloop demo``: Acme Parcel's support bot improves itself from its own traffic.

Starts ``tuneloop serve`` (embedded engine + SQLite) in a fresh ``TUNELOOP_HOME`` (or the one
given); simulated customers ask 24 questions, rate each reply and correct the ones that miss
the house style or the fact; then one loop cycle runs (dataset -> LoRA SFT -> eval -> gate ->
promote) and the held-out questions (never sent before) are asked again through the alias.
Scores are measured, never set: the task metric is the share of checks passed per reply
(greeting, the FAQ's fact, sign-off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer

ALIAS = "smollm2-135m-instruct"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(home: Path, port: int, engine_port: int) -> subprocess.Popen[bytes]:
    import httpx

    env = {**os.environ, "TUNELOOP_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    log = open(home / "gateway.log", "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
                             "--engine-port", str(engine_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tuneloop serve exited; see {home / 'gateway.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("tuneloop serve did not become ready in 300 s")


def _users(base_url: str, say: Any) -> dict[str, int]:
    """Each simulated customer asks (the bot sends its tools), then rates; a reply that misses a check,
    or calls the tool wrongly (or not at all for an order question), gets a correction."""
    import httpx
    import openai
    from tqdm import tqdm

    from adapters.evaluation.calls import calls_of
    from adapters.evaluation.checks import score
    from adapters.loop import demo_data

    client = openai.OpenAI(base_url=base_url, api_key="demo", max_retries=1, timeout=300)
    counts = {"asked": 0, "liked": 0, "corrected": 0}

    def one(item: tuple[int, tuple[str, list[dict[str, Any]], dict[str, Any]]]) -> None:
        i, (question, checks, ideal) = item
        r = client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": question}],
                                           tools=demo_data.TOOLS,
                                           temperature=0, max_tokens=48,
                                           user=f"customer-{i}")
        message = r.choices[0].message
        right_call = calls_of(message.model_dump()) == calls_of(ideal)
        ok = right_call and score(checks, message.content or "")[0] in (None, 1.0)
        body: dict[str, Any] = {"completion_id": r.id, "rating": 1 if ok else -1}
        if not ok:
            body["correction"] = ideal
        httpx.post(f"{base_url}/feedback", json=body, timeout=30).raise_for_status()
        counts["asked"] += 1
        counts["liked" if ok else "corrected"] += 1

    Item = tuple[str, list[dict[str, Any]], dict[str, Any]]  # question, checks, the ideal reply
    faq: list[Item] = [(q, demo_data.checks(fact), {"role": "assistant", "content": ideal})
                       for q, fact, ideal in demo_data.traffic()]
    orders: list[Item] = [(q, [], demo_data.order_call(o)) for q, o in demo_data.order_traffic()]
    items = list(enumerate(faq + orders))
    with ThreadPoolExecutor(4) as pool:
        list(tqdm(pool.map(one, items), total=len(items), desc="customers", unit="question"))
    say(f"{counts['asked']} questions asked: {counts['liked']} replies liked, {counts['corrected']} corrected")
    return counts


def _settings(held_out: Path) -> Any:
    from adapters.loop.config import LoopSettings

    return LoopSettings.model_validate({
        "min_feedback": 24,
        "dataset": {"format": "sft", "val_fraction": 0.0, "has_correction": True},
        "training": {"n_epochs": 6, "batch_size": 8, "learning_rate": 2e-3, "max_length": 320, "warmup_steps": 2},
        "eval": {"data": str(held_out), "max_tokens": 48},
    })


def demo(
    home: Annotated[Path | None, typer.Option(help="TUNELOOP_HOME to use (default: a fresh temp folder)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object last")] = False,
) -> None:
    """Acme Parcel: traffic -> feedback -> LoRA -> eval -> promote, with before/after on held-out questions."""
    import logging

    from adapters.evaluation import data as eval_data
    from adapters.evaluation import report
    from adapters.evaluation.runner import evaluate
    from adapters.loop import demo_data
    from adapters.loop.controller import run_cycle
    from adapters.registry.workspace import open_workspace

    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t0 = time.time()
    home = (home or Path(tempfile.mkdtemp(prefix="tuneloop-demo-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TUNELOOP_TRAIN_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))

    def say(msg: str) -> None:
        typer.echo(f"[demo {time.time() - t0:5.0f}s] {msg}", err=as_json)

    port, engine_port = _free_port(), _free_port()
    say(f"starting tuneloop serve (embedded engine + SQLite) in {home}")
    proc = _start(home, port, engine_port)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        held = home / "acme-held-out.jsonl"
        held.write_text("".join(json.dumps(line) + "\n" for line in demo_data.held_out()))
        _users(base_url, say)
        ws = open_workspace(home=home, gateway_url=base_url, engine_port=engine_port)
        time.sleep(2.5)  # the log writer batches: let the last feedback land
        cycle = run_cycle(ws, ALIAS, _settings(held), force=True, progress=True)
        assert cycle is not None
        state = cycle["state"] or {}
        say(f"cycle {cycle['id']}: {cycle['status']}")
        examples = eval_data.load_file(held)
        after = evaluate(base_url, {"promoted": ALIAS}, examples, max_tokens=48, api_key="demo")
        promoted_score = after.summaries()["promoted"]["score"]
        ev = state.get("eval") or {}
        baseline = (ev.get("live") or {}).get("score")
        say("before/after on the held-out questions (task checks: greeting, fact, sign-off; the right tool call):")
        say(f"  base model {baseline:.3f}  ->  alias after the loop {promoted_score:.3f}")
        tools_before = (ev.get("live") or {}).get("tool_calls")
        tools_after = after.summaries()["promoted"]["tool_calls"]
        say(f"  tool calls right (lookup_order when asked about an order, no call otherwise): "
            f"{tools_before:.3f}  ->  {tools_after:.3f}")
        for ex, o in zip(examples[:3], after.arms["promoted"].outcomes, strict=False):
            say(f"  Q: {ex.prompt[-1]['content']}\n     A: {o.reply}")
        plot = report.plot(after, home / "demo-after.png", "Acme Parcel: the alias after the loop")
        result = {"metric": ev.get("metric", "task"), "baseline_score": baseline, "promoted_score": promoted_score,
                  "baseline_tool_calls": tools_before, "promoted_tool_calls": tools_after,
                  "candidate_score_at_gate": (ev.get("candidate") or {}).get("score"),
                  "adapter": state.get("promoted") or state.get("adapter"), "cycle": cycle["id"],
                  "status": cycle["status"], "held_out": len(examples), "home": str(home),
                  "plot": ev.get("plot"), "plot_after": str(plot), "seconds": round(time.time() - t0, 1),
                  "stage_seconds": {k: v for k, v in state.items() if k.endswith("_s")}}
        say(f"plots: {ev.get('plot')} and {plot}")
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
        else:
            typer.echo(json.dumps(result, indent=2))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
