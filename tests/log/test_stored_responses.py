"""Stored responses (``POST /v1/responses`` with ``store``) travel with the interaction records: the
same queue, writer child, batches and spool, into the ``responses`` table, idempotently."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.api.responses_turn import Turn, keep
from gateway.auth import ANONYMOUS
from gateway.log.record import StoredResponse
from gateway.log.service import LogService
from gateway.log.spool import Spool
from gateway.log.writer import spool_folder
from gateway.store.responses import ResponseStore
from tests.log.records import make_record


def stored(n: int, completion_id: str | None) -> StoredResponse:
    rid = f"resp_{n:024x}"
    return StoredResponse(
        id=rid, created_at=time.time(), project="acme", completion_id=completion_id, previous_response_id=None,
        response={"id": rid, "object": "response", "status": "completed", "model": "support-bot",
                  "output": [{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": f"answer {n}", "annotations": []}]}]},
        input_items=[{"id": "msg_0", "type": "message", "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": f"question {n}"}]}])


async def test_written_with_the_interactions_of_its_batch(database_url: str, tmp_path: Path) -> None:
    service = await LogService.open(database_url, tmp_path)
    try:
        records = [make_record(i) for i in range(50)]
        rows = [stored(i, r.id) for i, r in enumerate(records)]
        for row, record in zip(rows, records, strict=True):
            assert service.submit(row) is True and service.submit(record) is True
        assert await service.sync()
        store = ResponseStore(service.engine)
        assert await asyncio.to_thread(service.store.count) == 50  # no stored response taken for one
        got = await asyncio.to_thread(store.get, rows[7].id, "acme")
        assert got == rows[7].response
        assert store.completion_of(rows[7].id, "acme") == (True, records[7].id)
        assert store.input_items(rows[7].id, "acme", after=None, limit=5, order="asc") == (rows[7].input_items, False)
        assert store.context(rows[7].id, "acme") == [*rows[7].input_items, *rows[7].response["output"]]
        for _ in range(2):  # a replayed batch is harmless
            service.submit(rows[7])
            assert await service.sync()
        assert store.get(rows[7].id, None) == rows[7].response
    finally:
        await service.close()


async def test_a_spooled_one_is_replayed_by_the_next_writer(database_url: str, tmp_path: Path) -> None:
    """What a dead writer, an outage or a restart leaves behind: dicts in the spool."""
    record = make_record(1)
    row = stored(1, record.id)
    spool = Spool(spool_folder(tmp_path))
    spool.append([row, record])
    spool.close()
    service = await LogService.open(database_url, tmp_path)  # the child replays the spool first
    try:
        assert await service.sync()
        assert ResponseStore(service.engine).get(row.id, "acme") == row.response
        assert service.store.get(record.id) is not None
        assert not spool.files()
    finally:
        await service.close()


def test_keep_queues_the_row_and_says_store_false_only_when_it_cannot() -> None:
    class Log:
        def __init__(self, queued: bool) -> None:
            self.queued = queued
            self.got: list[StoredResponse] = []

        def submit(self, record: StoredResponse) -> bool:
            self.got.append(record)
            return self.queued

    turn = Turn("resp_1", {"model": "m", "previous_response_id": "resp_0"}, 0, [{"id": "msg_0"}], ANONYMOUS, [])
    response = {"id": "resp_1", "store": True}
    ok = Log(True)
    assert keep(ok, turn, response, "chatcmpl-1") is response
    row = ok.got[0]
    assert (row.id, row.completion_id, row.previous_response_id) == ("resp_1", "chatcmpl-1", "resp_0")
    assert row.input_items == [{"id": "msg_0"}] and row.response is response
    assert keep(Log(False), turn, response, "chatcmpl-1") == {"id": "resp_1", "store": False}
    unstored = Log(True)
    turn.body["store"] = False
    assert keep(unstored, turn, response, "chatcmpl-1") is response and unstored.got == []
