"""End to end: traffic through the real gateway (openai SDK) and POST /v1/feedback into a
SQLite or PostgreSQL log, then ``tuneloop dataset build`` and ``validate`` as
subprocesses, and the SFT file through the engine's tokenizer chat template."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from adapters.datasets.tokens import load_local_tokenizer
from tests.fixtures.engine import test_home as engine_home
from tests.fixtures.gateway import GatewayProcess, fake_config

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNELOOP_HOME": str(engine_home()), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "dataset", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180, env=env)


def test_gateway_traffic_to_validated_sft_and_dpo(database_url: str, fake_upstream,
                                                  tmp_path: Path) -> None:
    gw = GatewayProcess({**fake_config(fake_upstream), "database_url": database_url},
                        tmp_path / "gw-home")
    try:
        client = gw.client()
        made = []
        for q in ("my parcel is late", "reset my password, I am bob@example.com",
                  "my parcel is late"):
            made.append(client.chat.completions.create(
                model="lora-bot", messages=[{"role": "user", "content": q}], store=True,
                metadata={"channel": "web"}))
        tooled = client.chat.completions.create(
            model="tools-bot", store=True, messages=[{"role": "user", "content": "weather?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}}}}])
        for body in ({"completion_id": made[0].id, "rating": 1},
                     {"completion_id": made[1].id, "rating": 2, "rating_scale": "stars",
                      "correction": {"role": "assistant", "content": "I sent a reset link."}}):
            r = httpx.post(f"{gw.base_url}/feedback", json=body, timeout=10)
            assert r.status_code == 200, r.text
        # a correction may be a tool call (OpenAI's shape; arguments a JSON object's text)
        call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
        for bad, param in (([{**call, "function": {"name": "", "arguments": "{}"}}], "correction.tool_calls.0"),
                           ([{**call, "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
                            "correction.tool_calls.0"), ([], "correction.tool_calls")):
            r = httpx.post(f"{gw.base_url}/feedback", timeout=10, json={
                "completion_id": tooled.id, "correction": {"role": "assistant", "content": None, "tool_calls": bad}})
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        r = httpx.post(f"{gw.base_url}/feedback", timeout=10, json={
            "completion_id": tooled.id, "correction": {"role": "assistant", "content": None, "tool_calls": [call]}})
        assert r.status_code == 200, r.text
    finally:
        gw.stop()

    out = tmp_path / "sft.jsonl"
    res = cli("build", "--format", "sft", "--out", str(out), "--database-url", database_url,
              "--val-fraction", "0", "--metadata", "channel=web", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    rep = orjson.loads(res.stdout)
    assert rep["written"] == {"train": 2, "val": 0}  # the tool call has no `channel`
    assert rep["dropped"] == {"exact_duplicate": 1}  # same prompt, same fake reply
    assert rep["scrubbed"] == {"email": 1}
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    corrected = [ln for ln in lines if ln["messages"][0]["content"].startswith("reset")]
    assert corrected[0]["messages"][0]["content"].endswith("I am [EMAIL]")
    assert corrected[0]["messages"][-1] == {"role": "assistant", "content": "I sent a reset link."}

    check = cli("validate", str(out), "--base-model", "smollm2-135m-instruct")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 lines, 2 valid, 0 bad" in check.stdout

    # The training side reads it: the engine's tokenizer renders each conversation.
    tok = load_local_tokenizer(engine_home())
    for ln in lines:
        text = tok.apply_chat_template(ln["messages"], tokenize=False)
        assert ln["messages"][-1]["content"] in text
        assert len(tok(text)["input_ids"]) < 8192

    tools_out = tmp_path / "tools.jsonl"
    res = cli("build", "--out", str(tools_out), "--database-url", database_url, "--model",
              "tools-bot", "--val-fraction", "0", "--no-progress")
    assert res.returncode == 0, res.stderr
    (tl,) = [orjson.loads(x) for x in tools_out.read_bytes().splitlines()]
    assert tl["tools"][0]["function"]["name"] == "get_weather"
    (fixed,) = tl["messages"][-1]["tool_calls"]  # the corrected call, not the upstream's
    assert fixed["function"] == call["function"] and fixed["id"].startswith("call_")
    assert cli("validate", str(tools_out)).returncode == 0

    dpo = tmp_path / "dpo.jsonl"
    res = cli("build", "--format", "dpo", "--out", str(dpo), "--database-url", database_url,
              "--val-fraction", "0", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert orjson.loads(res.stdout)["kept"] == {"correction": 2}
    assert cli("validate", str(dpo), "--format", "dpo", "--base-model", "gpt-4o-mini"
               ).returncode == 0
    shown = cli("show", orjson.loads(res.stdout)["dataset_id"], "--ids", "--database-url",
                database_url)
    assert sorted(orjson.loads(shown.stdout)["source_ids"]) == sorted([made[1].id, tooled.id])
