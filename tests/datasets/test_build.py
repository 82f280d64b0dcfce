"""Builds from real SQLite and PostgreSQL logs: lines, filters, DPO, scrub, dedupe, split,
lineage; every produced file passes the validator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from adapters.datasets.build import BuildOptions, build
from adapters.datasets.report import validate_file
from gateway.log.export import ExportFilters
from gateway.store import db
from gateway.store.datasets import DatasetStore
from tests.datasets.logfill import fill, record
from tests.fixtures.database import MODULE_DATABASES, module_database


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def run(url: str, tmp_path: Path, fmt: str = "sft", name: str = "out.jsonl", **kw) -> dict:
    opts = BuildOptions(fmt=fmt, out=tmp_path / name, progress=False, **kw)
    return build(db.create_engine(url), opts)


@pytest.fixture
def log(database_url: str, tmp_path: Path) -> str:
    fill(database_url, tmp_path / "home", log_records(), FEEDBACK)
    return database_url


@pytest.fixture(scope="module", params=MODULE_DATABASES)
def shared_log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same log, filled once for the module's read-only cases (each build reads it and adds its own set)."""
    home = tmp_path_factory.mktemp("build-shared")
    with module_database(request.param, home) as url:
        fill(url, home / "home", log_records(), FEEDBACK)
        yield url


def log_records() -> list:
    """Made at each fill (their times are now)."""
    return [
        record(1, "Where is my parcel?", "It ships tomorrow.", metadata={"team": "a"}),
        record(2, "Refund please", "Done, refunded.", metadata={"team": "b"}),
        record(3, "Broken", None, status=502),  # failed
        record(4, "Say nothing", ""),  # empty reply
        record(5, "Weather in Paris?", None, tools=True, tool_call=True),
        record(6, "Write a long story", "Once upon a", finish="length"),  # truncated
        record(7, "Where is my parcel?", "No idea.", adapter="v4"),  # same prompt as 1
        record(8, "Cancel my plan", "Cancelled.", model="other", project="beta"),
    ]


FEEDBACK = [
    {"completion_id": "chatcmpl-1", "rating": 1.0},
    {"completion_id": "chatcmpl-7", "rating": -1.0},
    {"completion_id": "chatcmpl-2", "rating": -1.0},
    {"completion_id": "chatcmpl-2", "rating": 0.5},  # newest rating counts
    {"completion_id": "chatcmpl-2", "correction": {"role": "assistant",
                                                   "content": "Refunded: 3-5 days."}},
    {"completion_id": "chatcmpl-2", "comment": "ok"},  # newer row without a correction
]


def test_sft_lines_corrections_skips_and_lineage(log: str, tmp_path: Path) -> None:
    rep = run(log, tmp_path, val_fraction=0.0)
    out = lines(tmp_path / "out.jsonl")
    by_user = {ln["messages"][1]["content"]: ln for ln in out}
    assert set(by_user) == {"Where is my parcel?", "Refund please", "Weather in Paris?",
                            "Cancel my plan"} and len(out) == 5  # two replies to the parcel prompt
    assert by_user["Refund please"]["messages"][-1] == {"role": "assistant",
                                                        "content": "Refunded: 3-5 days."}
    tool_line = by_user["Weather in Paris?"]
    assert tool_line["tools"][0]["function"]["name"] == "get_weather"
    assert tool_line["parallel_tool_calls"] is False
    assert tool_line["messages"][-1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert "refusal" not in by_user["Cancel my plan"]["messages"][-1]
    assert rep["dropped"] == {"failed": 1, "empty_reply": 1, "truncated": 1} or \
        rep["dropped"] == {"empty_reply": 1, "truncated": 1}  # status_ok filters failures in SQL
    assert rep["kept"] == {"ok": 4, "corrected": 1}
    assert validate_file(tmp_path / "out.jsonl", "sft", "gpt-4o-mini")["bad"] == 0
    store = DatasetStore(db.create_engine(log))
    row = store.get(rep["dataset_id"])
    assert row is not None and row["kind"] == "sft" and row["rows"] == 5
    assert row["sha256"] == rep["sha256"] and row["source"] == "log"
    assert store.source_ids(rep["dataset_id"]) == sorted(
        ["chatcmpl-1", "chatcmpl-2", "chatcmpl-5", "chatcmpl-7", "chatcmpl-8"])
    assert store.datasets_of("chatcmpl-2") == [rep["dataset_id"]]
    assert rep["dataset_id"] in [r["id"] for r in store.list()]


@pytest.mark.parametrize("filters, expected", [
    (ExportFilters(model="other"), {"chatcmpl-8"}),
    (ExportFilters(upstream_model="v4"), {"chatcmpl-7"}),
    (ExportFilters(project="beta"), {"chatcmpl-8"}),
    (ExportFilters(metadata={"team": "b"}), {"chatcmpl-2"}),
    (ExportFilters(min_rating=0.5), {"chatcmpl-1", "chatcmpl-2"}),
    (ExportFilters(has_correction=True), {"chatcmpl-2"}),
    (ExportFilters(since=1_700_000_005, until=1_700_000_008), {"chatcmpl-5", "chatcmpl-7"}),
])
def test_filters(shared_log: str, tmp_path: Path, filters: ExportFilters, expected: set[str]) -> None:
    rep = run(shared_log, tmp_path, filters=filters, val_fraction=0.0)
    assert set(DatasetStore(db.create_engine(shared_log)).source_ids(rep["dataset_id"])) == expected
    assert rep["filters"]["status_ok"] is True


def test_any_status_reports_failures(log: str, tmp_path: Path) -> None:
    rep = run(log, tmp_path, filters=ExportFilters(status_ok=False))
    assert rep["dropped"]["failed"] == 1


def test_dpo_from_corrections_and_rating_gaps(log: str, tmp_path: Path) -> None:
    rep = run(log, tmp_path, fmt="dpo", val_fraction=0.0)
    out = lines(tmp_path / "out.jsonl")
    assert rep["kept"] == {"correction": 1, "rating_pair": 1}
    corr = next(x for x in out if x["input"]["messages"][1]["content"] == "Refund please")
    assert corr["preferred_output"] == [{"role": "assistant", "content": "Refunded: 3-5 days."}]
    assert corr["non_preferred_output"] == [{"role": "assistant", "content": "Done, refunded."}]
    pair = next(x for x in out if x["input"]["messages"][1]["content"] == "Where is my parcel?")
    assert pair["preferred_output"][0]["content"] == "It ships tomorrow."  # rated +1 over -1
    assert pair["non_preferred_output"][0]["content"] == "No idea."
    assert validate_file(tmp_path / "out.jsonl", "dpo", "gpt-4o-mini")["bad"] == 0
    ids = DatasetStore(db.create_engine(log)).source_ids(rep["dataset_id"])
    assert ids == ["chatcmpl-1", "chatcmpl-2", "chatcmpl-7"]


def test_scrub_dedupe_and_stable_split(database_url: str, tmp_path: Path) -> None:
    pii = ("mail jane.doe@example.com or +1 415 555 0134, card 4111 1111 1111 1111, "
           "not a card 4111 1111 1111 1112, key sk-proj-abcdefghijklmnop1234, "
           "AKIAIOSFODNN7EXAMPLE, Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc")
    recs = [record(1, pii, "Noted, write to ops@acme.io")]
    recs += [record(2, "Hello, World!", "Hi there."), record(3, "hello   world", "hi there"),
             record(4, "Hello, World!", "Hi there.")]  # near and exact duplicates of 2
    recs += [record(10 + i, f"question number {i}", f"answer {i}") for i in range(200)]
    fill(database_url, tmp_path / "home", recs)
    rep = run(database_url, tmp_path, val_fraction=0.2)
    assert rep["scrubbed"] == {"email": 2, "phone": 1, "card": 1, "api_key": 1, "aws_key": 1,
                               "bearer": 1}
    assert rep["dropped"] == {"near_duplicate": 1, "exact_duplicate": 1}
    text = (tmp_path / "out.jsonl").read_text() + (tmp_path / "out.val.jsonl").read_text()
    for secret in ("jane.doe", "555 0134", "4111 1111 1111 1111", "sk-proj", "AKIA", "eyJ"):
        assert secret not in text
    assert "4111 1111 1111 1112" in text  # fails the Luhn check: not a card
    assert "[EMAIL]" in text and "Bearer [TOKEN]" in text
    store = DatasetStore(db.create_engine(database_url))
    val1 = set(store.source_ids(rep["dataset_id"], "val"))
    assert 20 <= len(val1) <= 70 and rep["written"]["val"] == len(val1)
    # More traffic, a rebuild: old records stay on their side of the split.
    fill(database_url, tmp_path / "home", [record(500 + i, f"later {i}", f"ok {i}")
                                           for i in range(50)])
    rep2 = run(database_url, tmp_path, val_fraction=0.2, name="again.jsonl")
    val2 = set(store.source_ids(rep2["dataset_id"], "val"))
    train2 = set(store.source_ids(rep2["dataset_id"], "train"))
    assert val1 <= val2 and not (val1 & train2)
    assert rep2["read"] == rep["read"] + 50


def test_a_call_whose_arguments_are_not_a_json_object_is_dropped() -> None:
    """A reply (or a correction) whose tool call cannot be trained on is skipped with its reason."""
    from adapters.datasets.sft import sft_line

    request = {"messages": [{"role": "user", "content": "weather in Oslo?"}],
               "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}

    def reply(arguments: str) -> dict:
        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        return {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}

    assert sft_line(200, request, reply("Oslo"), None, "tool_calls") == (None, "bad_tool_arguments")
    assert sft_line(200, request, reply("[1]"), None, "tool_calls") == (None, "bad_tool_arguments")
    line, how = sft_line(200, request, reply('{"city": "Oslo"}'), None, "tool_calls")
    assert how == "ok" and line["tools"] == request["tools"]
    fixed = reply('{"city": Oslo}')["choices"][0]["message"]
    assert sft_line(200, request, reply('{"city": "Oslo"}'), fixed, "tool_calls") == (None, "bad_tool_arguments")
