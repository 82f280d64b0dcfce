"""Writes and lists a tenant could abuse: limit bounds on every list, feedback caps, a paginated
feedback list, and the key's rpm on every write route. The real app on loopback (uvicorn in a
thread), auth required, keys made through the real ``KeyStore``; each attack is followed by
another tenant's request that must still succeed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.store.keys import KeyStore
from tests.log.records import make_record
from tests.log.server import LoopbackGateway, serve

BAD_LIMITS = ["0", "-1", "101", str(2**63), str(2**64 + 5), str(-(2**63) - 1)]


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[LoopbackGateway]:
    with serve(f"sqlite:///{tmp_path / 'tuneloop.db'}", tmp_path, auth="required") as gateway:
        yield gateway


def tenant(gw: LoopbackGateway, project: str, **limits: float) -> httpx.Client:
    _, secret = KeyStore(gw.log.engine).create(project, limits=limits)
    return httpx.Client(base_url=gw.base_url, headers={"authorization": f"Bearer {secret}"}, timeout=30)


def completion(gw: LoopbackGateway, project: str) -> str:
    rec = make_record(1, project=project)
    gw.log.submit(rec)
    return rec.id


def test_every_list_takes_limit_1_to_100_else_400(gw: LoopbackGateway) -> None:
    alpha, beta = tenant(gw, "alpha"), tenant(gw, "beta")
    mine, theirs = completion(gw, "alpha"), completion(gw, "beta")
    assert alpha.post("/feedback", json={"completion_id": mine, "rating": 1}).status_code == 200
    lists = {"/chat/completions": 200, "/chat/completions/{c}/messages": 200,
             "/chat/completions/{c}/feedback": 200, "/files": 200, "/fine_tuning/jobs": 200,
             "/fine_tuning/jobs/ftjob-none/events": 404, "/fine_tuning/jobs/ftjob-none/checkpoints": 404}
    for path, ok in lists.items():
        for bad in BAD_LIMITS:
            r = alpha.get(path.format(c=mine), params={"limit": bad})
            assert r.status_code == 400, (path, bad, r.text)
            err = r.json()["error"]
            assert err["param"] == "limit" and "limit must be between 1 and 100" in err["message"], err
        # right after, another tenant's page (a job that does not exist is still a 404, not a 400)
        assert beta.get(path.format(c=theirs), params={"limit": 100}).status_code == ok, path
        assert beta.get(path.format(c=theirs), params={"limit": 1}).status_code == ok, path


def test_feedback_caps_name_the_field_beyond_them(gw: LoopbackGateway) -> None:
    alpha, beta = tenant(gw, "alpha"), tenant(gw, "beta")
    mine, theirs = completion(gw, "alpha"), completion(gw, "beta")
    attacks = [
        ({"comment": "c" * 8193}, 400, "comment"),
        ({"correction": "r" * 65537}, 400, "correction"),
        ({"correction": {"role": "assistant", "content": [{"type": "text", "text": "r" * 65537}]}},
         400, "correction"),
        ({"tags": [f"t{i}" for i in range(33)]}, 400, "tags"),
        ({"tags": ["ok", "t" * 65]}, 400, "tags[1]"),
        ({"comment": "c" * (2 * 1024 * 1024)}, 413, None),  # a body past any cap is not even read
    ]
    for extra, status, param in attacks:
        r = alpha.post("/feedback", json={"completion_id": mine, **extra})
        assert r.status_code == status, (param, r.text[:300])
        assert r.json()["error"]["param"] == param
        assert beta.post("/feedback", json={"completion_id": theirs, "rating": 1}).status_code == 200
    deep = f'{{"completion_id": "{mine}", "comment": "x", "metadata": {{"k": {"[" * 5000}{"]" * 5000}}}}}'
    r = alpha.post("/feedback", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text[:300]  # nesting too deep to store: a 400, never a 500
    at_the_caps = {"comment": "c" * 8192, "correction": "r" * 65536, "tags": ["t" * 64] * 32}
    assert alpha.post("/feedback", json={"completion_id": mine, **at_the_caps}).status_code == 200


def test_feedback_list_is_paginated_with_the_summary_over_all(gw: LoopbackGateway) -> None:
    alpha = tenant(gw, "alpha")
    mine = completion(gw, "alpha")
    ids = []
    for i in range(5):
        r = alpha.post("/feedback", json={"completion_id": mine, "rating": 1, "comment": f"n{i}"})
        ids.append(r.json()["id"])
        time.sleep(0.01)
    seen, after, pages = [], None, []
    while True:
        page = alpha.get(f"/chat/completions/{mine}/feedback",
                         params={"limit": 2, **({"after": after} if after else {})}).json()
        pages.append(page)
        seen += [f["id"] for f in page["data"]]
        assert page["summary"]["count"] == 5 and page["summary"]["comment"] == "n4"
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1] and [len(p["data"]) for p in pages] == [2, 2, 1]
    oldest = alpha.get(f"/chat/completions/{mine}/feedback", params={"order": "asc", "limit": 3}).json()
    assert [f["id"] for f in oldest["data"]] == ids[:3] and oldest["has_more"] is True
    r = alpha.get(f"/chat/completions/{mine}/feedback", params={"after": "fb-nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"


def _fresh_minute() -> None:
    """Start early in a minute so the rpm window does not roll over mid-test."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def test_every_write_route_counts_against_the_keys_rpm(gw: LoopbackGateway) -> None:
    alpha, beta = tenant(gw, "alpha", rpm=5), tenant(gw, "beta", rpm=5)
    one, two, theirs = completion(gw, "alpha"), completion(gw, "alpha"), completion(gw, "beta")
    line = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hi!"}]}
    _fresh_minute()
    writes = [
        lambda: alpha.post("/feedback", json={"completion_id": one, "rating": 1}),
        lambda: alpha.post(f"/chat/completions/{one}", json={"metadata": {"k": "v"}}),
        lambda: alpha.post("/files", files={"file": ("a.jsonl", json.dumps(line).encode())},
                           data={"purpose": "fine-tune"}),
        lambda: alpha.post("/fine_tuning/jobs", json={"model": "smollm2-135m-instruct",
                                                       "training_file": "file-not-there"}),
        lambda: alpha.delete(f"/chat/completions/{two}"),
    ]
    statuses = [w().status_code for w in writes]
    assert statuses[:3] == [200, 200, 200] and statuses[3] in (400, 404) and statuses[4] == 200, statuses
    for write in writes[:3]:
        r = write()
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        ok = beta.post("/feedback", json={"completion_id": theirs, "rating": 1})  # another tenant, right after
        assert ok.status_code == 200
    assert int(ok.headers["x-ratelimit-remaining-requests"]) < 5
    assert alpha.get("/chat/completions").status_code == 200  # reads are not writes
