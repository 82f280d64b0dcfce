"""The ``prompt_completion`` format from real SQLite and PostgreSQL logs: legacy text completions
only (chat completions never mixed in, nor text completions into SFT or DPO), corrections replacing
the completion, skip reasons, scrubbing, dedupe; every produced file passes the validator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.datasets.build import BuildOptions, build
from adapters.datasets.prompt_completion import prompt_completion_line
from adapters.datasets.report import validate_file
from gateway.log.record import InteractionRecord
from gateway.store import db
from gateway.store.datasets import DatasetStore
from tests.datasets.logfill import fill, record


def text(i: int, prompt: Any, reply: str, *, finish: str = "stop", **request: Any) -> InteractionRecord:
    """A logged POST /v1/completions."""
    req = {"model": "bot", "prompt": prompt, **request}
    resp = {"id": f"cmpl-{i}", "object": "text_completion", "created": 1, "model": "v3",
            "choices": [{"index": 0, "text": reply, "finish_reason": finish, "logprobs": None}]}
    return InteractionRecord(id=f"cmpl-{i}", created=1_700_000_000 + i, project="acme", requested_model="bot",
                             upstream_model="v3", request=req, response=resp, finish_reason=finish,
                             object="text_completion")


def run(url: str, tmp_path: Path, fmt: str, name: str = "out.jsonl") -> dict:
    return build(db.create_engine(url), BuildOptions(fmt=fmt, out=tmp_path / name, val_fraction=0.0, progress=False))


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


@pytest.fixture
def log(database_url: str, tmp_path: Path) -> str:
    recs = [
        text(1, "Q: where is my parcel?\nA:", " No idea."),
        text(2, ["Translate 'cat' to French:"], " chat"),  # an array of one prompt
        text(3, "Mail jane.doe@example.com back:", " Done, jane.doe@example.com."),
        text(4, "Translate 'cat' to French:", " chat"),  # an exact duplicate of 2
        text(5, ["a", "b"], " x"),  # a batch
        text(6, [1212, 318], " y"),  # token ids
        text(7, "Once upon a", " time there", finish="length"),  # cut by max_tokens
        text(8, "def f(", " x", suffix="return x"),  # an insertion
        text(9, "Repeat: hello", "Repeat: hello hello", echo=True),  # echo: the prompt comes back in front
        # a text completion whose request carries chat messages (an unknown field, forwarded): still not SFT
        text(10, "Q: refund?\nA:", " Done.", messages=[{"role": "user", "content": "smuggled"}]),
        record(11, "Where is my parcel?", "It ships tomorrow."),  # a chat completion
    ]
    fb = [{"completion_id": "cmpl-1", "correction": {"role": "assistant", "content": " It ships tomorrow."}},
          {"completion_id": "cmpl-7", "correction": " time, there was a cat."},  # a corrected cut reply counts
          {"completion_id": "cmpl-10", "rating": 1.0}, {"completion_id": "chatcmpl-11", "rating": -1.0}]
    fill(database_url, tmp_path / "home", recs, fb)
    return database_url


def test_prompt_completion_lines_corrections_skips_and_lineage(log: str, tmp_path: Path) -> None:
    rep = run(log, tmp_path, "prompt_completion")
    out = lines(tmp_path / "out.jsonl")
    assert out == [
        {"prompt": "Q: where is my parcel?\nA:", "completion": " It ships tomorrow."},
        {"prompt": "Translate 'cat' to French:", "completion": " chat"},
        {"prompt": "Mail [EMAIL] back:", "completion": " Done, [EMAIL]."},
        {"prompt": "Once upon a", "completion": " time, there was a cat."},
        {"prompt": "Repeat: hello", "completion": " hello"},
        {"prompt": "Q: refund?\nA:", "completion": " Done."},
    ]
    assert rep["read"] == 10 and rep["kept"] == {"corrected": 2, "ok": 4}
    assert rep["dropped"] == {"batch_prompt": 1, "token_prompt": 1, "has_suffix": 1, "exact_duplicate": 1}
    assert rep["scrubbed"] == {"email": 2} and rep["filters"]["object"] == "text_completion"
    assert validate_file(tmp_path / "out.jsonl", "prompt_completion", "gpt-4o-mini")["bad"] == 0
    store = DatasetStore(db.create_engine(log))
    row = store.get(rep["dataset_id"])
    assert row is not None and row["kind"] == "prompt_completion" and row["rows"] == 6
    assert store.source_ids(rep["dataset_id"]) == ["cmpl-1", "cmpl-10", "cmpl-2", "cmpl-3", "cmpl-7", "cmpl-9"]


def test_chat_sets_never_take_text_completions(log: str, tmp_path: Path) -> None:
    sft = run(log, tmp_path, "sft", "sft.jsonl")
    assert sft["read"] == 1 and [ln["messages"][-1]["content"] for ln in lines(tmp_path / "sft.jsonl")] == [
        "It ships tomorrow."]
    dpo = run(log, tmp_path, "dpo", "dpo.jsonl")
    assert dpo["read"] == 1 and dpo["written"]["train"] == 0


def test_the_line_of_a_record() -> None:
    ok = {"choices": [{"text": " B", "finish_reason": "stop"}]}
    assert prompt_completion_line(200, {"prompt": "A"}, ok, None, "stop") == ({"prompt": "A", "completion": " B"}, "ok")
    assert prompt_completion_line(502, {"prompt": "A"}, None, None, None) == (None, "failed")
    assert prompt_completion_line(200, {"prompt": "A"}, {"choices": [{"text": "  "}]}, None, "stop") == (
        None, "empty_reply")
    parts = {"role": "assistant", "content": [{"type": "text", "text": " C"}, {"type": "text", "text": "D"}]}
    assert prompt_completion_line(200, {"prompt": "A"}, ok, parts, "stop")[0] == {"prompt": "A", "completion": " CD"}
    calls_only = {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]}
    assert prompt_completion_line(200, {"prompt": "A"}, ok, calls_only, "stop")[1] == "ok"  # no text: the reply


def test_the_cli_builds_and_validates_the_format(log: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from adapters.datasets.cli import app

    out = tmp_path / "cli.jsonl"
    built = CliRunner().invoke(app, ["build", "--format", "prompt_completion", "--out", str(out), "--val-fraction",
                                     "0", "--no-progress", "--json", "--database-url", log])
    assert built.exit_code == 0, built.output
    assert orjson.loads(built.output)["written"] == {"train": 6, "val": 0}
    checked = CliRunner().invoke(app, ["validate", str(out), "--base-model", "gpt-4o-mini"])
    assert checked.exit_code == 0 and "6 valid, 0 bad" in checked.output, checked.output
