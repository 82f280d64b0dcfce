"""The byte relay (gateway.raw_chunks) against the parsed relay it replaced: what the client gets and
what the log stores must be the same, for any chunks (hypothesis), and the writer's assembly
(gateway.log.chunks via to_row) must equal the in-process one."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.assemble import StreamAssembler
from gateway.log.record import InteractionRecord
from gateway.log.sink import COLUMNS, to_row
from gateway.raw_chunks import RawChunks
from gateway.text_completion import TextAssembler

UP = "chatcmpl-upstream123"
OURS = "chatcmpl-ours456"

# text that tries to look like the id, the usage key or an error envelope, in any position
texts = st.one_of(st.text(max_size=20), st.sampled_from([
    UP, f'"{UP}"', '"usage":null', ',"usage":{"total_tokens":1}', '"error"', '{"error":{}}', "\x1e", "\\"]))


def _chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": UP, "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}


@st.composite
def streams(draw):
    null_usage = draw(st.booleans())  # OpenAI sends "usage": null on each chunk once usage is asked for
    extra = {"usage": None} if null_usage else {}
    chunks = [_chunk({"role": "assistant", "content": ""}, **extra)]
    for text in draw(st.lists(texts, max_size=8)):
        chunks.append(_chunk({"content": text}, **extra))
    if draw(st.booleans()):
        chunks.append(_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                              "function": {"name": "f", "arguments": draw(texts)}}]}, **extra))
    chunks.append(_chunk({}, "stop", **extra))
    usage = {"prompt_tokens": 3, "completion_tokens": len(chunks), "total_tokens": 3 + len(chunks)}
    chunks.append({"id": UP, "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                   "usage": usage})
    return chunks


def _parsed_relay(chunks: list[dict], want_usage: bool) -> tuple[list[dict], dict]:
    """What the parsed relay sent and logged (the old RoutedHooks.frames, kept here as the reference)."""
    asm, out = StreamAssembler(), []
    for chunk in json.loads(json.dumps(chunks)):
        asm.add(chunk)
        if "usage" in chunk and not want_usage:
            if not chunk.get("choices"):
                continue
            del chunk["usage"]
        chunk["id"] = OURS
        out.append(chunk)
    return out, asm.completion(OURS, 1)


@settings(max_examples=150, deadline=None)
@given(chunks=streams(), want_usage=st.booleans(), spaced=st.booleans())
def test_the_byte_relay_sends_and_logs_what_the_parsed_relay_did(chunks, want_usage, spaced):
    expected_frames, expected_reply = _parsed_relay(chunks, want_usage)
    relay = RawChunks(StreamAssembler, OURS)
    dump = (lambda c: json.dumps(c).encode()) if spaced else orjson.dumps  # "key": value, or compact
    frames = [f for f in (relay.frame(dump(c), want_usage) for c in chunks) if f is not None]
    assert [orjson.loads(f[len(b"data: "):-2]) for f in frames] == expected_frames
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    assert relay.upstream_id == UP and relay.usage == chunks[-1]["usage"]
    out, deferred = relay.for_record(OURS, 1, 200)
    assert out == {"usage": chunks[-1]["usage"]} and deferred is not None
    record = InteractionRecord(id=OURS, created=1.5, response=out if deferred is None else None, chunks=deferred)
    piped = orjson.loads(orjson.dumps(record))  # through the pipe, as the writer child sees it
    row = dict(zip(COLUMNS, to_row(piped), strict=True))
    assert orjson.loads(row["response"]) == expected_reply
    assert row["finish_reason"] == "stop"
    assert relay.completion(OURS, 1) == expected_reply  # and the in-process assembly agrees


def test_a_cut_stream_is_assembled_in_process_with_its_deltas():
    relay = RawChunks(StreamAssembler, OURS)
    for text in ["Hel", "lo"]:
        relay.frame(orjson.dumps(_chunk({"content": text})), True)
    out, deferred = relay.for_record(OURS, 1, 499)
    assert deferred is None and out["choices"][0]["message"]["content"] == "Hello"
    assert relay.deltas == 2
    # a 200 without usage (an upstream that ignores include_usage) is assembled in process too
    assert relay.for_record(OURS, 1, 200)[1] is None


def test_the_writer_scrubs_an_assembled_reply_and_skips_what_does_not_parse():
    events = [orjson.dumps(_chunk({"content": "mail me at jane@example.com"})), b"{not json}",
              orjson.dumps(_chunk({}, "stop"))]
    record = InteractionRecord(id=OURS, created=2.0, redact_pii=True,
                               chunks=b"\x1e".join(events).decode())
    row = dict(zip(COLUMNS, to_row(record), strict=True))
    reply = orjson.loads(row["response"])
    assert "jane@example.com" not in reply["choices"][0]["message"]["content"]
    assert row["finish_reason"] == "stop" and reply["id"] == OURS


def test_legacy_completions_are_assembled_by_their_own_assembler():
    events = [{"id": UP, "object": "text_completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": f}]}
              for t, f in [("Hel", None), ("lo", "length")]]
    relay = RawChunks(TextAssembler, "cmpl-ours")
    for e in events:
        relay.frame(orjson.dumps(e), False)
    expected = relay.completion("cmpl-ours", 1)
    record = InteractionRecord(id="cmpl-ours", created=1.0, object="text_completion",
                               chunks=b"\x1e".join(relay.events).decode())
    row = dict(zip(COLUMNS, to_row(record), strict=True))
    assert orjson.loads(row["response"]) == expected
    assert expected["choices"][0]["text"] == "Hello" and row["finish_reason"] == "length"
