"""The Responses event stream (gateway.responses.events) read from chunk bytes: a chunk of plain text like
the last parsed one is read without parsing it, and must give the same events, byte for byte, as
parsing every chunk; anything else (other fields, other text encodings, bytes that only look alike) is
parsed. Whole streams as our engine, vLLM and OpenAI-style servers write them, with any text."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.responses.events import EventStream

BODY = {"model": "m", "input": "hi", "stream": True}
IDS = re.compile(rb'(msg|resp)_[0-9a-f]{24}|(?<="completed_at":)\d+')  # made anew each time


def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, Any] | None = None,
          fingerprint: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 17, "model": "m"}
    if fingerprint:
        out["system_fingerprint"] = "fp_1"
    out["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]
    if usage is not None:
        out["usage"] = usage
    return out


def run(datas: list[bytes], from_bytes: bool) -> tuple[bytes, int, dict[str, Any]]:
    """Every event of the stream, how many chunks were read from their bytes, and the final Response."""
    events = EventStream("resp_1", BODY, 1)
    out, read = [events.start()], 0
    for data in datas:
        got = events.plain(data) if from_bytes else None
        if got is None:
            parsed = orjson.loads(data)
            events.learn(data, parsed)
            got = events.chunk(parsed)
        else:
            read += 1
        out.append(got)
    response, tail = events.finish()
    out.append(tail + events.final(response))
    return IDS.sub(b"0", b"".join(out)), read, response


def decoded(stream: bytes) -> list[Any]:
    return [orjson.loads(line[6:]) for line in stream.split(b"\n") if line.startswith(b"data: ")]


def same_events(datas: list[bytes], same_bytes: bool = True) -> int:
    """The events read from bytes equal the events of parsing every chunk (the same bytes, unless the
    upstream escapes text otherwise than we would); how many chunks were read from their bytes."""
    fast, read, response = run(datas, True)
    slow, _, _ = run(datas, False)
    assert decoded(fast) == decoded(slow)
    assert fast == slow or not same_bytes
    texts = [d["choices"][0]["delta"].get("content") or "" for d in map(orjson.loads, datas) if d["choices"]]
    text = "".join(texts)
    assert [part["text"] for item in response["output"] for part in item["content"]] == ([text] if text else [])
    return read


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(TEXT, min_size=1, max_size=8), fingerprint=st.booleans(), role_first=st.booleans())
def test_any_text_gives_the_same_events_as_parsing_every_chunk(texts, fingerprint, role_first):
    first = {"role": "assistant", "content": ""} if role_first else {"content": texts[0], "role": "assistant"}
    chunks = [chunk(first, fingerprint=fingerprint)]
    chunks += [chunk({"content": t}, fingerprint=fingerprint) for t in texts]
    chunks += [chunk({}, "stop", fingerprint=fingerprint), chunk(None, usage={"prompt_tokens": 1,
                                                                             "completion_tokens": 2})]
    same_events([orjson.dumps(c) for c in chunks])  # as our engine and vLLM write them
    for spacing in ((", ", ": "), (",", ":")):  # \uXXXX escapes, as Python's json writes them
        same_events([json.dumps(c, separators=spacing).encode() for c in chunks], same_bytes=False)


def test_a_stream_of_plain_text_is_read_from_its_bytes_after_the_first_such_chunk():
    words = ["Hel", "lo, \"wor", "ld\"\\ ", "\n", "é😀", "</s>"]
    datas = [orjson.dumps(c) for c in [chunk({"role": "assistant", "content": ""}),
                                       *[chunk({"content": w}) for w in words], chunk({}, "stop")]]
    assert same_events(datas) == len(words) - 1  # the first text chunk is parsed (and learnt from)


def test_bytes_that_only_look_like_a_plain_chunk_are_parsed():
    plain = orjson.dumps(chunk({"content": "a"}))
    before, after = plain.split(b'"a"')
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    # the learnt bytes around, but not one string between them: a finish reason and usage slipped in
    crafted = (before + b'"b"},"logprobs":null,"finish_reason":"length"}],"usage":' + orjson.dumps(usage)
               + b',"x":[{"y":{"content":"c"' + after)
    assert crafted.startswith(before) and crafted.endswith(after) and orjson.loads(crafted)["usage"] == usage
    datas = [plain, crafted, orjson.dumps(chunk({"content": "d"})), b'{"error":{"message":"cut"}}']
    fast, read, response = run(datas, True)
    assert fast == run(datas, False)[0] and read == 1  # only the last plain chunk
    assert response["status"] == "failed" and response["output"][0]["content"][0]["text"] == "abd"


def test_text_that_is_not_valid_json_on_its_own_is_left_to_the_parser():
    plain = orjson.dumps(chunk({"content": "a"}))
    before, after = plain.split(b'"a"')
    events = EventStream("resp_1", BODY, 1)
    events.start()
    events.learn(plain, orjson.loads(plain))
    for raw in (b'"\\ud800"', b'"\xff"', b'"a\x01"', b"17", b'"a","b"'):  # lone surrogate, bad UTF-8, ...
        assert events.plain(before + raw + after) is None
    assert events.plain(before + b'""' + after) == b""  # no text: no event, as when parsed
    assert events.plain(before + b'"\\u00e9"' + after).count(b'"delta":"\\u00e9"') == 1  # sent as it came
