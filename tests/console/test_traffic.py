"""The console's reads of the log (gateway.store.traffic) and its sessions (gateway.store.sessions), on SQLite
and PostgreSQL, without a browser: every filter, keyset pages, tenancy, and sessions that end with their key."""

from __future__ import annotations

import fnmatch
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.console import views
from gateway.errors import InvalidRequest
from gateway.store import db, sessions, traffic
from gateway.store.keys import KeyStore
from gateway.store.schema import feedback, interactions

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0


def _row(i: int, **over: Any) -> dict[str, Any]:
    row = {"id": f"chatcmpl-{i:04d}", "created": T0 + i, "project": "alpha", "requested_model": "bot",
           "target": "local", "upstream_model": "support-v3", "arm": None, "attempts": 1, "stream": False,
           "store": False, "status": 200, "kind": "primary", "object": "chat.completion",
           "request": {"model": "bot", "messages": [{"role": "user", "content": f"question {i}"}]},
           "response": {"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]}}
    return {**row, **over}


@pytest.fixture
def engine(database_url: str) -> Any:
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    rows = [_row(i) for i in range(12)]
    rows += [_row(20, project="beta"), _row(21, status=502, response=None),
             _row(22, upstream_model="support-v4", arm="candidate"), _row(23, kind="shadow"),
             _row(24, requested_model="other", request={"messages": [{"role": "user", "content": "100%_sure"}]})]
    with engine.begin() as conn:
        conn.execute(interactions.insert(), rows)
        for fid, cid, created, rating, correction in (
                ("fb-1", "chatcmpl-0003", T0 + 100, 1.0, None),
                ("fb-2", "chatcmpl-0003", T0 + 101, -1.0, None),  # the newest counts
                ("fb-3", "chatcmpl-0004", T0 + 100, 1.0, {"role": "assistant", "content": "better"})):
            conn.execute(feedback.insert().values(id=fid, completion_id=cid, created=created, rating=rating,
                                                  correction=correction))
    yield engine
    engine.dispose()


def ids(engine: Any, **filters: Any) -> list[str]:
    return [r["id"] for r in traffic.page(engine, traffic.TrafficFilter(**filters), limit=100).rows]


def test_each_filter_and_the_tenancy(engine: Any) -> None:
    alpha = ids(engine, project="alpha")
    assert alpha[0] == "chatcmpl-0024" and "chatcmpl-0020" not in alpha and "chatcmpl-0023" not in alpha  # no shadows
    assert ids(engine, project="beta") == ["chatcmpl-0020"]
    assert ids(engine, status="error") == ["chatcmpl-0021"] == ids(engine, status="502")
    assert "chatcmpl-0021" not in ids(engine, status="ok")
    assert ids(engine, model="other") == ["chatcmpl-0024"]
    assert ids(engine, adapter="support-v4") == ["chatcmpl-0022"] == ids(engine, arm="candidate")
    assert ids(engine, rating="down") == ["chatcmpl-0003"] and ids(engine, rating="up") == ["chatcmpl-0004"]
    assert set(ids(engine, rating="rated")) == {"chatcmpl-0003", "chatcmpl-0004"}
    assert ids(engine, corrected=True) == ["chatcmpl-0004"] and "chatcmpl-0004" not in ids(engine, corrected=False)
    assert ids(engine, text="ANSWER 7") == ["chatcmpl-0007"]  # the reply, any case
    assert ids(engine, text="100%_") == ["chatcmpl-0024"] and ids(engine, text="0%_s") == ["chatcmpl-0024"]
    assert ids(engine, text="%") == ["chatcmpl-0024"]  # LIKE's wildcards are plain characters
    assert ids(engine, since=T0 + 5, until=T0 + 7) == ["chatcmpl-0006", "chatcmpl-0005"]


def test_pages_follow_each_other_newest_first(engine: Any) -> None:
    seen, after = [], None
    while True:
        rows, older, _ = traffic.page(engine, traffic.TrafficFilter(project="alpha"), after=after, limit=5)
        seen += [r["id"] for r in rows]
        if older is None:
            break
        assert older == rows[-1]["id"]
        after = older
    assert seen == ids(engine, project="alpha") and len(seen) == len(set(seen)) == 15
    with pytest.raises(InvalidRequest):  # another project's id is no cursor
        traffic.page(engine, traffic.TrafficFilter(project="beta"), after="chatcmpl-0001")


def test_one_interaction_with_its_feedback_and_its_tenancy(engine: Any) -> None:
    found = traffic.interaction(engine, "chatcmpl-0003", "alpha")
    assert found is not None and found["feedback"]["rating"] == -1.0 and found["feedback"]["count"] == 2
    assert traffic.interaction(engine, "chatcmpl-0003", "beta") is None
    assert traffic.interaction(engine, "chatcmpl-0003", None) is not None  # an admin's


def test_a_session_lives_as_long_as_its_key(engine: Any) -> None:
    keys = KeyStore(engine)
    key, _ = keys.create("alpha", actor="test")
    session_id = sessions.start(engine, key["id"])
    found = sessions.load(engine, session_id)
    assert found is not None and found.key is not None and found.key["project"] == "alpha"
    sessions.choose_project(engine, session_id, "beta")
    assert sessions.load(engine, session_id).project == "beta"  # type: ignore[union-attr]
    with engine.connect() as conn:  # the table holds a hash of the cookie's id, never the id
        assert conn.execute(sa.select(sessions.t.c.id_hash)).scalars().all() == [sessions._digest(session_id)]
    keys.revoke(key["id"], actor="test")
    assert sessions.load(engine, session_id) is None
    keyless = sessions.start(engine, None)
    assert sessions.load(engine, keyless) is not None and sessions.load(engine, "forged") is None
    sessions.end(engine, keyless)
    assert sessions.load(engine, keyless) is None
    assert sessions.projects(engine) == ["alpha", "default"]


def test_the_query_string_becomes_a_filter() -> None:
    f = views.traffic_filter({"status": "error", "rating": "up", "corrected": "no", "since": "2027-01-15",
                              "q": "  refund ", "project": "beta"}, "alpha")
    assert (f.project, f.status, f.rating, f.corrected, f.text) == ("alpha", "error", "up", False, "refund")
    assert f.since == time.mktime((2027, 1, 15, 0, 0, 0, 0, 0, 0)) - time.timezone
    for bad in ({"status": "bad"}, {"rating": "5"}, {"since": "yesterday"}):
        with pytest.raises(InvalidRequest):
            views.traffic_filter(bad, None)


def test_the_wheel_carries_every_template_and_static_file() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gateway"]
    files = [p.relative_to(ROOT / "gateway").as_posix() for sub in ("templates", "static")
             for p in (ROOT / "gateway" / "console" / sub).iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
