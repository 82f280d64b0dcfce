"""The validator: one precise reason per defect, with line numbers; CLI exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from adapters.datasets.report import validate_file

REPO = Path(__file__).resolve().parents[2]
U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
GOOD = {"messages": [U, A]}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

# (line, the reason it must be reported with)
DEFECTS = [
    ("{not json", "invalid JSON"),
    ("", "empty line"),
    ("[1, 2]", "a line must be a JSON object"),
    ({"msgs": [U, A]}, "missing 'messages'"),
    ({"messages": [U, A], "extra": 1}, "unknown top-level key 'extra'"),
    ({"messages": []}, "messages: must be a non-empty list of messages"),
    ({"messages": [U]}, "messages: the last message must be from the assistant"),
    ({"messages": [{"role": "bot", "content": "x"}, A]}, "messages[0]: role 'bot' is not one of"),
    ({"messages": [U, {**A, "weight": 2}]}, "messages[1]: 'weight' must be 0 or 1"),
    ({"messages": [{**U, "weight": 1}, A]}, "messages[0]: key 'weight' is not allowed in a user"),
    ({"messages": [{"role": "user"}, A]}, "messages[0]: 'content' is missing or null"),
    ({"messages": [{"role": "user", "content": 3}, A]}, "messages[0]: 'content' must be a string"),
    ({"messages": [U, {"role": "assistant", "content": [{"type": "text"}]}]},
     "messages[1].content[0]: must be {'type': 'text', 'text': str}"),
    ({"messages": [U, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "type": "fn"}]}]}, "messages[1].tool_calls[0]: 'type' must be 'function'"),
    ({"messages": [U, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": {"a": 1}}}]}]},
     "messages[1].tool_calls[0]: 'function.arguments' must be a JSON string"),
    ({"messages": [U, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": "{oops"}}]}]},
     "'function.arguments' is not valid JSON"),
    ({"messages": [U, {"role": "tool", "content": "x"}, A]},
     "messages[1]: a tool message needs 'tool_call_id'"),
    ({"messages": [U, A], "tools": [{"type": "function"}]}, "tools[0]: must be"),
    ({"messages": [U, A], "parallel_tool_calls": "yes"}, "parallel_tool_calls: must be a boolean"),
    ({"messages": [U, {**A, "content": "word " * 9000}]}, "too long:"),
]
DPO_DEFECTS = [
    ({"input": {"messages": [U]}, "preferred_output": [A]}, "missing 'non_preferred_output'"),
    ({"input": {"messages": [U]}, "preferred_output": [A, A], "non_preferred_output": [A]},
     "preferred_output: must be a list of exactly one assistant message"),
    ({"input": {"messages": [U]}, "preferred_output": [U], "non_preferred_output": [A]},
     "preferred_output[0]: role must be 'assistant'"),
    ({"input": {"messages": [U, A]}, "preferred_output": [A],
      "non_preferred_output": [{**A, "content": "no"}]},
     "input.messages: must not end with an assistant message"),
    ({"input": {"messages": [U]}, "preferred_output": [A], "non_preferred_output": [A]},
     "preferred_output and non_preferred_output are identical"),
]


def write(path: Path, items: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


@pytest.mark.parametrize("fmt, defects", [("sft", DEFECTS), ("dpo", DPO_DEFECTS)])
def test_each_defect_is_reported_on_its_line(tmp_path: Path, fmt: str, defects: list) -> None:
    good = GOOD if fmt == "sft" else {"input": {"messages": [U]}, "preferred_output": [A],
                                      "non_preferred_output": [{**A, "content": "meh"}]}
    items = [good]
    for bad, _ in defects:
        items += [bad, good]
    rep = validate_file(write(tmp_path / "f.jsonl", items), fmt, "smollm2-135m-instruct")
    assert rep["lines"] == len(items) and rep["bad"] == len(defects)
    assert rep["valid"] == len(defects) + 1
    by_line = {p["line"]: p["reasons"] for p in rep["problems"]}
    for k, (_, reason) in enumerate(defects):
        line = 2 + 2 * k
        assert any(reason in r for r in by_line[line]), (line, reason, by_line[line])
    assert rep["max_tokens"] < 8192 and sum(rep["token_histogram"].values()) == rep["valid"]


def test_cost_estimate_for_openai_models(tmp_path: Path) -> None:
    path = write(tmp_path / "f.jsonl", [GOOD] * 10)
    rep = validate_file(path, "sft", "gpt-4o-mini", epochs=2)
    assert rep["base_model"] == "gpt-4o-mini-2024-07-18" and rep["bad"] == 0
    assert rep["estimated_training_tokens"] == 2 * rep["tokens"] > 0
    assert rep["estimated_cost_usd"] == pytest.approx(rep["estimated_training_tokens"] * 3.0 / 1e6,
                                                      abs=1e-4)
    over = validate_file(path, "sft", "gpt-4o-mini", price_per_1m=100.0)
    assert over["price_per_1m_training_tokens"] == 100.0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "dataset", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_validate_exit_codes_and_json(tmp_path: Path) -> None:
    good = write(tmp_path / "good.jsonl", [GOOD] * 3)
    ok = cli("validate", str(good), "--base-model", "gpt-4o-mini")
    assert ok.returncode == 0, ok.stderr
    assert "3 lines, 3 valid, 0 bad" in ok.stdout and "$3.00/1M" in ok.stdout
    bad = write(tmp_path / "bad.jsonl", [GOOD, {"messages": [U]}, "{x"])
    res = cli("validate", str(bad), "--base-model", "gpt-4o-mini", "--json")
    assert res.returncode == 1
    rep = orjson.loads(res.stdout)
    assert [p["line"] for p in rep["problems"]] == [2, 3]
    text = cli("validate", str(bad), "--base-model", "gpt-4o-mini")
    assert "line 2: messages: the last message must be from the assistant" in text.stdout
    assert "line 3: invalid JSON" in text.stdout


def test_cli_import_records_valid_files_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    good = write(tmp_path / "ext.jsonl", [GOOD] * 4)
    res = cli("import", str(good), "--database-url", url, "--base-model", "gpt-4o-mini")
    assert res.returncode == 0, res.stderr
    ds_id = res.stdout.strip().splitlines()[-1]
    assert ds_id.startswith("ds-")
    shown = orjson.loads(cli("show", ds_id, "--database-url", url).stdout)
    assert shown["source"] == "import" and shown["rows"] == 4 and shown["kind"] == "sft"
    bad = write(tmp_path / "bad.jsonl", [GOOD, {"messages": [U]}])
    refused = cli("import", str(bad), "--database-url", url, "--base-model", "gpt-4o-mini")
    assert refused.returncode == 1 and "line 2" in refused.stderr
    listed = cli("list", "--database-url", url, "--json")
    assert [r["id"] for r in orjson.loads(listed.stdout)] == [ds_id]
