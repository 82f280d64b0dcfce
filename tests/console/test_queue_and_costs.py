"""The review queue (gateway.store.review) and the costs page's numbers (gateway.store.costs, gateway.console.costs,
gateway.console.charts) on SQLite and PostgreSQL, without a browser or a gateway."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.console import charts
from gateway.console.costs import day_range, report
from gateway.errors import InvalidRequest
from gateway.store import costs, review
from gateway.store.schema import feedback, interactions

NOW = time.time()


def _row(i: int, *, hexid: str | None = None, **over: Any) -> dict[str, Any]:
    text = over.pop("text", f"answer {i}")
    row = {"id": hexid or f"chatcmpl-{i:023x}1", "created": NOW - 1000 + i, "project": "alpha",
           "requested_model": "bot", "target": "local", "upstream_model": "support-v3", "attempts": 1,
           "stream": False, "store": False, "status": 200, "kind": "primary", "object": "chat.completion",
           "request": {"messages": [{"role": "user", "content": f"question {i}"}]},
           "response": {"choices": [{"message": {"role": "assistant", "content": text}}]},
           "latency_s": None, "ttft_s": None, "cost_usd": None, "prompt_tokens": None, "completion_tokens": None,
           "parent_id": None}
    return {**row, **over}


def _feedback(engine: Any, completion_id: str, n: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(feedback.insert().values(id=f"fb-{completion_id[-6:]}-{n}", completion_id=completion_id,
                                              created=NOW + n, **values))


def test_the_queue_holds_low_rated_sampled_and_disagreeing_replies_until_reviewed(engine: Any) -> None:
    low, low_fixed, sampled, unsampled = (_row(1), _row(2), _row(3, hexid="chatcmpl-" + "a" * 23 + "0"), _row(4))
    disagree, agree = _row(5), _row(6)
    old_sample = _row(7, hexid="chatcmpl-" + "b" * 23 + "0", created=NOW - 30 * 86400)  # outside the window
    beta = _row(8, hexid="chatcmpl-" + "c" * 23 + "0", project="beta")
    failed = _row(9, hexid="chatcmpl-" + "d" * 23 + "0", status=502, response=None)
    shadows = [_row(10, hexid=f"{disagree['id']}-shadow-x", kind="shadow", parent_id=disagree["id"], text="other"),
               _row(11, hexid=f"{agree['id']}-shadow-x", kind="shadow", parent_id=agree["id"], text="answer 6")]
    with engine.begin() as conn:
        conn.execute(interactions.insert(), [low, low_fixed, sampled, unsampled, disagree, agree, old_sample, beta,
                                             failed, *shadows])
    _feedback(engine, low["id"], 1, rating=-1.0)
    _feedback(engine, low_fixed["id"], 1, rating=-1.0)
    _feedback(engine, low_fixed["id"], 2, correction={"role": "assistant", "content": "better"})

    def queue(project: str | None = "alpha", **kw: Any) -> list[tuple[str, str]]:
        seen, after = [], None
        while (found := review.next_item(engine, project, after=after, **kw)) is not None:
            seen.append(found)
            after = found[0]
        return seen

    assert queue() == [(disagree["id"], "shadow"), (sampled["id"], "sampled"), (low["id"], "low")]  # newest first
    assert review.counts(engine, "alpha") == {"low": 1, "sampled": 1, "shadow": 1}
    assert queue(reasons=("sampled",)) == [(sampled["id"], "sampled")]
    assert (beta["id"], "sampled") in queue(None) and (beta["id"], "sampled") not in queue()
    assert review.shadows(engine, disagree["id"])[0]["response"]["choices"][0]["message"]["content"] == "other"
    # a reviewed reply leaves: a queue reject (rating -1, metadata.review), any feedback on the others
    _feedback(engine, low["id"], 2, rating=-1.0, metadata={"review": "reject"})
    _feedback(engine, sampled["id"], 1, rating=1.0, metadata={"review": "approve"})
    _feedback(engine, disagree["id"], 1, correction={"role": "assistant", "content": "fixed"})
    assert queue() == [] and review.counts(engine, "alpha") == {"low": 0, "sampled": 0, "shadow": 0}


def test_percentiles_over_a_bounded_sample_per_day(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    day0 = (int(NOW // 86400) - 1) * 86400.0
    rows = [_row(i, hexid="chatcmpl-" + hashlib.sha256(str(i).encode()).hexdigest()[:24], created=day0 + i,
                 latency_s=i / 100, ttft_s=i / 1000) for i in range(1, 101)]
    rows.append(_row(200, created=day0 + 86400 + 5, latency_s=9.0, ttft_s=None, stream=False))
    rows.append(_row(201, created=day0 + 5, latency_s=99.0, status=500))  # failures are not in the percentiles
    with engine.begin() as conn:
        conn.execute(interactions.insert(), rows)
    found = costs.latency_by_day(engine, since=day0, until=day0 + 2 * 86400)
    first = found[int(day0 // 86400)]
    assert (first["latency_p50"], first["latency_p99"], first["ttft_p50"]) == (0.5, 0.99, 0.05)
    assert found[int(day0 // 86400) + 1] == {"latency_p50": 9.0, "latency_p99": 9.0, "ttft_p50": None,
                                              "ttft_p99": None, "sampled": 1}
    monkeypatch.setattr(costs, "SAMPLE_CAP", 20)  # 101 rows: about a fifth of them, chosen by the id's last digits
    sampled = costs.latency_by_day(engine, since=day0, until=day0 + 2 * 86400)
    assert 10 <= sum(d["sampled"] or 0 for d in sampled.values()) <= 30
    assert costs.percentile([], 0.5) is None and costs.percentile([3.0, 1.0, 2.0], 0.99) == 3.0


def test_the_costs_report_sums_the_log(engine: Any) -> None:
    today = datetime.fromtimestamp(NOW, UTC).date()
    at = NOW // 86400 * 86400  # today's first seconds (UTC), also when the test runs just after midnight
    rows = [_row(1, cost_usd=0.5, prompt_tokens=10, completion_tokens=5, latency_s=0.2, created=at + 1),
            _row(2, cost_usd=0.25, prompt_tokens=4, completion_tokens=1, requested_model="other", project="beta",
                 created=at + 2),
            _row(3, status=502, response=None, latency_s=1.0, created=at + 3),
            _row(4, hexid="x-shadow", kind="shadow", parent_id="p", cost_usd=0.125, prompt_tokens=1, created=at + 4)]
    with engine.begin() as conn:
        conn.execute(interactions.insert(), rows)
    out = report(engine, None, today.replace(day=1) if today.day > 1 else today, today, True)
    assert out["totals"] == {"requests": 4, "errors": 1, "prompt_tokens": 15, "completion_tokens": 6,
                             "cost_usd": 0.875}
    assert {r["model"]: r["cost_usd"] for r in out["models"]} == {"bot": 0.625, "other": 0.25}
    assert {r["project"]: r["requests"] for r in out["by_project"]} == {"alpha": 3, "beta": 1}
    last = out["days"][-1]
    assert last["error_rate"] == pytest.approx(1 / 3) and last["latency_p50"] == 0.2  # shadows not counted here
    assert report(engine, "beta", today, today, False)["totals"]["cost_usd"] == 0.25
    with engine.connect() as conn:  # the same sums as the table's
        assert conn.execute(sa.select(sa.func.sum(interactions.c.cost_usd))).scalar() == 0.875


def test_the_range_and_the_charts() -> None:
    today = date(2027, 3, 20)
    assert day_range({}, today) == (date(2027, 3, 7), today)
    assert day_range({"days": "7"}, today) == (date(2027, 3, 14), today)
    assert day_range({"from": "2027-01-01", "to": "2027-01-31"}, today) == (date(2027, 1, 1), date(2027, 1, 31))
    for bad in ({"days": "0"}, {"days": "x"}, {"from": "2027-02-01", "to": "2027-01-01"}, {"to": "soon"},
                {"from": "2020-01-01"}):
        with pytest.raises(InvalidRequest):
            day_range(bad, today)
    drawn = charts.bars([1.0, None, 2.0], ["a", "b", "c"])
    assert [b["h"] for b in drawn["bars"]] == [66.0, 0.0, 132.0] and drawn["bars"][2]["title"] == "c: 2.0"
    drawn = charts.lines({"p50": [1.0, None, 3.0], "p99": [2.0, 4.0, None]}, ["a", "b", "c"])
    assert [len(line["runs"]) for line in drawn["lines"]] == [2, 1]  # a gap breaks the line
    assert drawn["lines"][1]["dots"][1]["y"] == 4.0  # the top value at the top
