"""Feedback: add, read back, newest of each kind wins, 404 and 400 envelopes, retention."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.log.retention import prune
from tests.fixtures.database import MODULE_DATABASES, module_database
from tests.log.records import make_record
from tests.log.server import LoopbackGateway, serve
from tests.spec import validate


@pytest.fixture
def gw(database_url: str, tmp_path: Path) -> Iterator[LoopbackGateway]:
    with serve(database_url, tmp_path) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=MODULE_DATABASES)
def refusing_gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackGateway]:
    """One gateway for the module's refusals (a 400 writes nothing), with completion ``c`` in its log."""
    home = tmp_path_factory.mktemp("feedback-refusals")
    with module_database(request.param, home) as url, serve(url, home) as gateway:
        gateway.log.submit(make_record(1, id="c"))
        yield gateway


def _post(gw: LoopbackGateway, body: object) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/feedback", json=body)


def test_add_and_read_back_newest_wins(gw: LoopbackGateway) -> None:
    rec = make_record(1)
    gw.log.submit(rec)  # feedback right after the completion: read-your-writes
    r = _post(gw, {"completion_id": rec.id, "rating": 1, "tags": ["helpful"]})
    assert r.status_code == 200
    first = r.json()
    assert first["object"] == "feedback" and first["id"].startswith("fb-")
    assert first["completion_id"] == rec.id and first["rating"] == 1.0
    assert isinstance(first["created"], int)
    time.sleep(0.01)
    second = _post(gw, {"completion_id": rec.id, "rating": 2, "rating_scale": "stars",
                        "correction": "Here is the replacement.", "comment": "too long"}).json()
    assert second["rating"] == -0.5 and second["rating_raw"] == 2
    assert second["rating_scale"] == "stars"
    assert second["correction"] == {"role": "assistant", "content": "Here is the replacement."}
    time.sleep(0.01)
    third = _post(gw, {"completion_id": rec.id, "correction": {"role": "assistant",
                                                               "content": "Better."},
                       "metadata": {"by": "agent-7"}}).json()
    listing = httpx.get(f"{gw.base_url}/chat/completions/{rec.id}/feedback").json()
    assert [f["id"] for f in listing["data"]] == [third["id"], second["id"], first["id"]]
    s = listing["summary"]
    assert s["count"] == 3
    assert s["rating"] == -0.5 and s["rating_id"] == second["id"]  # newest rating
    assert s["correction"] == {"role": "assistant", "content": "Better."}
    assert s["correction_id"] == third["id"]
    assert s["comment"] == "too long" and s["tags"] == ["helpful"]


def test_unknown_completion_is_404(gw: LoopbackGateway) -> None:
    r = _post(gw, {"completion_id": "chatcmpl-nope", "rating": 1})
    assert r.status_code == 404
    validate("ErrorResponse", r.json())
    r = httpx.get(f"{gw.base_url}/chat/completions/chatcmpl-nope/feedback")
    assert r.status_code == 404
    validate("ErrorResponse", r.json())


@pytest.mark.parametrize("body, param", [
    ({"rating": 1}, "completion_id"),
    ({"completion_id": "c"}, None),  # nothing to record
    ({"completion_id": "c", "rating": 1.5}, "rating"),
    ({"completion_id": "c", "rating": 0, "rating_scale": "stars"}, "rating"),
    ({"completion_id": "c", "rating": "good"}, "rating"),
    ({"completion_id": "c", "rating": True}, "rating"),
    ({"completion_id": "c", "tags": "x"}, "tags"),
    ({"completion_id": "c", "correction": {"role": "user", "content": "x"}}, "correction"),
    ({"completion_id": "c", "correction": {"role": "assistant"}}, "correction.content"),
    ({"completion_id": "c", "comment": "x", "metadata": {"k": 1}}, "metadata"),
    ({"completion_id": "c", "comment": "x", "score": 3}, "score"),
    ([1, 2], None),
])
def test_bad_shapes_are_400(refusing_gw: LoopbackGateway, body: object, param: str | None) -> None:
    r = _post(refusing_gw, body)
    assert r.status_code == 400, r.text
    validate("ErrorResponse", r.json())
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["param"] == param


def test_unparsable_body_is_400(refusing_gw: LoopbackGateway) -> None:
    r = httpx.post(f"{refusing_gw.base_url}/feedback", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    validate("ErrorResponse", r.json())


def test_deleting_a_completion_deletes_its_feedback(gw: LoopbackGateway) -> None:
    rec = make_record(1)
    gw.log.submit(rec)
    assert _post(gw, {"completion_id": rec.id, "comment": "ok"}).status_code == 200
    gw.client().chat.completions.delete(rec.id)
    assert gw.log.store.list_feedback(rec.id) is None
    with gw.log.engine.connect() as conn:
        from gateway.store.schema import feedback
        assert conn.execute(feedback.select()).all() == []


def test_prune_deletes_old_interactions_and_their_feedback(gw: LoopbackGateway,
                                                           database_url: str) -> None:
    old = make_record(1, created=time.time() - 40 * 86400)
    new = make_record(2)
    gw.log.submit(old)
    gw.log.submit(new)
    assert _post(gw, {"completion_id": old.id, "rating": -1}).status_code == 200
    assert prune(database_url, 30 * 86400) == 1
    assert gw.log.store.ids() == [new.id]
    assert httpx.get(f"{gw.base_url}/chat/completions/{old.id}/feedback").status_code == 404
