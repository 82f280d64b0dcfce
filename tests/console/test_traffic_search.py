"""The traffic page's searches (text, metadata) on SQLite and PostgreSQL: what they find, in the request and in
the reply, on rows the log writer wrote, and the bound on a search's walk (``SCAN_ROWS``) that keeps a page
fast on a big log: a page stops after so many rows and its ``older`` cursor goes on from there, so paging
through finds every match, in order, once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.console import views
from gateway.errors import InvalidRequest
from gateway.log.service import LogService
from gateway.store import db, traffic
from gateway.store.schema import interactions
from tests.log.records import make_record

T0 = 1_800_000_000.0


def _row(i: int, **over: Any) -> dict[str, Any]:
    row = {"id": f"chatcmpl-{i:04d}", "created": T0 + i, "project": "alpha", "requested_model": "bot",
           "status": 200, "kind": "primary", "attempts": 1, "stream": False, "store": False,
           "request": {"messages": [{"role": "user", "content": f"question {i}"}]},
           "response": {"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]},
           "metadata": {"team": f"t{i % 3}", "session": f"s{i}"}}
    return {**row, **over}


@pytest.fixture
def engine(database_url: str) -> Any:
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    rows = [_row(i) for i in range(30)]
    rows += [_row(40, request={"messages": [{"role": "user", "content": "Where is my Parcel?"}]}),
             _row(41, response={"choices": [{"message": {"role": "assistant", "content": "Your parcel is late."}}]}),
             _row(42, metadata=None), _row(43, kind="shadow", metadata={"team": "t1"}),
             _row(44, project="beta", metadata={"team": "t1"})]
    with engine.begin() as conn:
        conn.execute(interactions.insert(), rows)
    yield engine
    engine.dispose()


def ids(engine: Any, **filters: Any) -> list[str]:
    return [r["id"] for r in traffic.page(engine, traffic.TrafficFilter(**filters), limit=100).rows]


def test_text_search_finds_the_request_and_the_reply_in_any_case(engine: Any) -> None:
    assert ids(engine, text="parcel") == ["chatcmpl-0041", "chatcmpl-0040"]  # the reply, then the request
    assert ids(engine, text="QUESTION 7") == ["chatcmpl-0007"] and ids(engine, text="answer 29") == ["chatcmpl-0029"]
    assert ids(engine, text="nowhere") == []


def test_metadata_key_value_pairs_all_match(engine: Any) -> None:
    t1 = ids(engine, project="alpha", metadata=(("team", "t1"),))
    assert t1 == ["chatcmpl-0040"] + [f"chatcmpl-{i:04d}" for i in range(28, 0, -3)]  # no shadow, no beta
    assert ids(engine, metadata=(("team", "t1"),))[0] == "chatcmpl-0044"  # an admin's view: every project
    assert ids(engine, metadata=(("team", "t1"), ("session", "s4"))) == ["chatcmpl-0004"]
    assert ids(engine, metadata=(("team", "t1"), ("session", "s5"))) == []
    assert ids(engine, metadata=(("nokey", "x"),)) == []
    assert ids(engine, metadata=(("team", "t1"),), text="answer 1") == [
        "chatcmpl-0019", "chatcmpl-0016", "chatcmpl-0013", "chatcmpl-0010", "chatcmpl-0001"]


@pytest.mark.parametrize("filters", [{"text": "answer 1"}, {"metadata": (("team", "t2"),)}, {"adapter": None}])
def test_a_bounded_search_pages_through_every_match_once(engine: Any, filters: dict[str, Any]) -> None:
    whole = traffic.page(engine, traffic.TrafficFilter(**filters), limit=100, scan_rows=0).rows
    seen, after, pages, bounded = [], None, 0, 0
    while True:
        found = traffic.page(engine, traffic.TrafficFilter(**filters), after=after, limit=3, scan_rows=4)
        seen += found.rows
        pages += 1
        bounded += found.searched_to is not None
        if found.older is None:
            break
        after = found.older
    assert [r["id"] for r in seen] == [r["id"] for r in whole] and whole
    if traffic.TrafficFilter(**filters).searching:
        assert bounded and pages > len(whole) // 3  # some pages stopped at the bound, short of a full page
    else:
        assert not bounded  # nothing to search: plain keyset pages


def test_a_search_page_says_how_far_back_it_looked(engine: Any) -> None:
    def search(after: str | None) -> traffic.TrafficPage:
        return traffic.page(engine, traffic.TrafficFilter(text="question 3"), after=after, scan_rows=10)

    # the walk, newest first: 44 (another project: an admin sees it), 43 (a shadow: walked, not listed), 42 ...
    pages = [search(None)]
    assert pages[0].rows == [] and pages[0].searched_to == T0 + 25  # looked at 44..40 and 29..25
    while pages[-1].older is not None:
        pages.append(search(pages[-1].older))
    assert [p.older for p in pages] == ["chatcmpl-0025", "chatcmpl-0015", "chatcmpl-0005", None]
    assert [r["id"] for p in pages for r in p.rows] == ["chatcmpl-0003"]
    small = traffic.page(engine, traffic.TrafficFilter(text="question", since=T0 + 5, until=T0 + 8), scan_rows=10)
    assert [r["id"] for r in small.rows] == ["chatcmpl-0007", "chatcmpl-0006", "chatcmpl-0005"]
    assert small.older is None and small.searched_to is None  # a time range under the bound is searched whole


async def test_rows_the_writer_wrote_are_found(database_url: str, tmp_path: Path) -> None:
    service = await LogService.open(database_url, tmp_path)
    try:
        for i in range(3):
            service.submit(make_record(9000 + i, metadata={"ticket": f"T-{i}"}))
        await service.sync()
        engine = service.engine
        assert len(ids(engine, text="order #9001 arrived")) == 1  # the request's text
        assert len(ids(engine, text="broken glasses; you'll get")) == 3  # the reply's
        assert len(ids(engine, metadata=(("ticket", "T-2"),))) == 1
    finally:
        await service.close()


def test_the_query_string_metadata_filter() -> None:
    f = views.traffic_filter({"meta": " team=t1 , session = s4,"}, None)
    assert f.metadata == (("team", "t1"), ("session", "s4")) and f.searching
    assert views.traffic_filter({"meta": "url=https://x?a=b"}, None).metadata == (("url", "https://x?a=b"),)
    assert "meta" in views.FILTERS and not views.traffic_filter({}, None).searching
    for bad in ("team", "=t1", "team=t1, oops"):
        with pytest.raises(InvalidRequest):
            views.traffic_filter({"meta": bad}, None)
