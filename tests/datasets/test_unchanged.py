"""The fast build path writes exactly what the original one did: the files' sha256 and
the report's counts for a varied log are pinned (computed with the builder as it was
before the DB-API / worker rewrite), in-process and through encode workers, with
batches small enough that every path (several batches, workers, dedupe across batches)
runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.datasets.build import BuildOptions, build
from gateway.log.record import InteractionRecord
from gateway.store import db
from tests.datasets.logfill import fill, record

SYSTEM_PII = "You are Acme's agent; escalate to boss@acme.example or +1 415 555 0199."


def _parts(i: int, texts: list[str], reply: str) -> InteractionRecord:
    rec = record(i, "x", reply)
    rec.request["messages"][1]["content"] = [{"type": "text", "text": t} for t in texts]
    return rec


def varied_log() -> tuple[list[InteractionRecord], list[dict[str, Any]]]:
    recs = []
    for i in range(60):
        recs.append(record(i, f"Question {i % 23}: where is order #{1000 + i % 17}?",
                           f"Order {1000 + i % 17} ships in {i % 5} days.",
                           metadata={"team": "ab"[i % 2]}))
    recs += [
        record(100, "Hello, World!", "Hi there."),
        record(101, "hello   world", "hi there"),  # near duplicate of 100
        record(102, "Hello, World!", "Hi there."),  # exact duplicate of 100
        record(103, "Café “quoted” — ¿qué tal? ¡Hola! naïve façade…", "Très bien ‘merci’."),
        record(104, "café quoted — qué tal hola naïve façade", "très bien merci"),  # near
        record(105, "mail jane.doe@example.com, card 4111 1111 1111 1111, not 4111 1111 1111 "
               "1112, key sk-proj-abcdefghijklmnop1234 AKIAIOSFODNN7EXAMPLE Bearer "
               "eyJhbGciOiJIUzI1NiJ9.abc ghp_abcdefghijklmnopqrstuvwxyz0123456789 "
               "call (415) 555-0134 or 415.555.0135", "Noted; write to ops@acme.io"),
        record(106, "Weather in Paris?", None, tools=True, tool_call=True),
        record(107, "Weather in Paris?", None, tools=True, tool_call=True),  # exact dup
        record(108, "Broken", None, status=502),
        record(109, "Say nothing", ""),
        record(110, "Write a long story", "Once upon a", finish="length"),
        record(111, "Write a long story", "Once upon a", finish="length"),  # corrected below
        record(112, "tabs\tand\nnewlines\x1fand\x1cseps", "ok\u00a0then"),
        record(113, "tabs and newlines and seps", "ok then"),  # near dup of 112
        _parts(114, ["part one 555-123-4567", "part two"], "Parts reply."),
        _parts(115, ["part one", "part two"], "Parts reply."),
    ]
    for i, k in enumerate((120, 121, 122)):  # a system prompt with PII, repeated
        rec = record(k, f"system pii {i}", f"reply {i}")
        rec.request["messages"][0]["content"] = SYSTEM_PII
        recs.append(rec)
    recs += [record(130, "Reset my password, I am bob@example.com", "Done."),
             record(131, "Reset my password, I am bob@example.com", "Cannot do that, call 555-0100."),
             record(132, "reset my password i am bob@example.com", "Sure thing.")]
    dev = record(123, "developer prompt", "fine")
    dev.request["messages"][0] = {"role": "developer", "content": "Keys: sk-abcdefghijklmnopqrstu"}
    recs.append(dev)
    fb = [
        {"completion_id": "chatcmpl-1", "rating": 1.0},
        {"completion_id": "chatcmpl-24", "rating": -1.0},  # same prompt as 1 (i % 23)
        {"completion_id": "chatcmpl-2", "rating": -1.0},
        {"completion_id": "chatcmpl-2", "rating": 0.5},
        {"completion_id": "chatcmpl-2", "correction": {"role": "assistant",
                                                       "content": "Corrected: tomorrow."}},
        {"completion_id": "chatcmpl-2", "comment": "newer row, no correction"},
        {"completion_id": "chatcmpl-111", "correction": {"role": "assistant",
                                                         "content": "The end."}},
        {"completion_id": "chatcmpl-100", "rating": 1.0},
        {"completion_id": "chatcmpl-101", "rating": -1.0},
        {"completion_id": "chatcmpl-5", "correction": "plain string correction 555-0100"},
        {"completion_id": "chatcmpl-130", "rating": 0.5},
        {"completion_id": "chatcmpl-131", "rating": -1.0},
        {"completion_id": "chatcmpl-132", "rating": 1.0},
    ]
    return recs, fb


# (backend, format) → (train sha256, val sha256, kept, dropped, scrubbed). PostgreSQL's
# SFT files differ from SQLite's only because JSONB orders object keys its own way.
SFT_REPORT = ({"ok": 72, "corrected": 3},
              {"near_duplicate": 3, "exact_duplicate": 2, "empty_reply": 1, "truncated": 1},
              {"api_key": 3, "aws_key": 1, "bearer": 1, "email": 8, "card": 1, "phone": 6})
DPO = ("9b1d0ccd6e776022faa349a7dcac9668ac8741b57604847c699842254d0ee02e",
       "51ac97cef32c71ac5a1dc9de12f0a94ce02f4c5cf96d06d4acc9d13a9f59d83b",
       {"correction": 3, "rating_pair": 1}, {"no_preference": 72}, {"email": 1})
GOLDEN: dict[tuple[str, str], tuple[str, str, dict, dict, dict]] = {
    ("sqlite", "sft"): ("3c94ed485079bcb57b8e540ccaa2e74ceb5726d3e56169ca9698212d27cd51f9",
                        "3cf25a1ba0003116d2d2a9960fd856666c4334bf72ab536873409f73091e8d96",
                        *SFT_REPORT),
    ("postgresql", "sft"): ("d471c7248f2160f77044f392708ef59550b35caeecde24bd3da607c7924bbfcc",
                            "e0d45d4eb54ef3c110ba0673b6a26e83c3bea15470fdde9304c3d906d4d82f82",
                            *SFT_REPORT),
    ("sqlite", "dpo"): DPO,
    ("postgresql", "dpo"): DPO,
}


def run_build(url: str, out: Path, fmt: str, **kw: Any) -> dict[str, Any]:
    opts = BuildOptions(fmt=fmt, out=out, progress=False, val_fraction=0.3, **kw)
    return build(db.create_engine(url), opts)


def summary(rep: dict[str, Any]) -> tuple[str, str, dict, dict, dict]:
    return rep["sha256"], rep["val_sha256"], rep["kept"], rep["dropped"], rep["scrubbed"]


@pytest.mark.parametrize("fmt", ["sft", "dpo"])
def test_output_unchanged(database_url: str, tmp_path: Path, fmt: str) -> None:
    recs, fb = varied_log()
    fill(database_url, tmp_path / "home", recs, fb)
    variants = [{"workers": 0, "prefetch": 0}, {"workers": 0, "batch": 7},
                {"workers": 1, "batch": 7}, {"workers": 2, "batch": 5, "prefetch": 1}]
    if fmt == "dpo":
        variants = variants[:2]
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    for k, kw in enumerate(variants):
        rep = run_build(database_url, tmp_path / f"{fmt}-{k}.jsonl", fmt, **kw)
        assert summary(rep) == GOLDEN[backend, fmt], kw
        assert rep["written"]["train"] + rep["written"]["val"] == sum(rep["kept"].values())


def test_ascii_normalization_matches_the_str_path() -> None:
    import random
    import string

    from adapters.datasets.dedupe import normalize_bytes, normalize_text

    rng = random.Random(5)
    alphabets = (string.printable + "\x1c\x1d\x1e\x1f\u00a0\u2019\u0130\u00e9  ..,,",
                 string.ascii_letters + "   .,!?-\t\n")
    for alphabet in alphabets:
        for _ in range(20000):
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            assert normalize_bytes(s) == normalize_text(s).encode(), repr(s)


def test_dedupe_keys_spilled_to_disk_decide_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from adapters.datasets.dedupe import Deduper, KeySet

    rng = random.Random(1)
    pool = [rng.getrandbits(64).to_bytes(8, "little") for _ in range(3000)]
    exact = [rng.choice(pool) for _ in range(20000)]
    near = [rng.choice(pool) if rng.random() < 0.5 else rng.getrandbits(64).to_bytes(8, "little")
            for _ in range(20000)]

    def decisions(merge_at: int, memory_keys: int) -> tuple[list[str | None], int]:
        monkeypatch.setattr(KeySet, "MERGE_AT", merge_at)
        monkeypatch.setattr(KeySet, "MEMORY_KEYS", memory_keys)
        dd, out = Deduper(), []
        for i in range(0, len(exact), 333):
            out += dd.check_batch(exact[i:i + 333], near[i:i + 333])
        on_disk = dd._exact._disk_n
        dd.close()
        return out, on_disk

    in_memory, none_on_disk = decisions(1 << 16, 1 << 21)
    spilled, on_disk = decisions(7, 30)
    assert none_on_disk == 0 and on_disk > 2000
    assert spilled == in_memory and in_memory.count(None) < len(in_memory) // 2


def test_spilling_build_output_unchanged(database_url: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.datasets.dedupe import KeySet

    monkeypatch.setattr(KeySet, "MERGE_AT", 3)
    monkeypatch.setattr(KeySet, "MEMORY_KEYS", 10)
    recs, fb = varied_log()
    fill(database_url, tmp_path / "home", recs, fb)
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    rep = run_build(database_url, tmp_path / "spill.jsonl", "sft", batch=4)
    assert summary(rep) == GOLDEN[backend, "sft"]
