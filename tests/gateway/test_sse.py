"""gateway.sse: the one SSE parser (providers' upstream streams, the benchmarks' clients).

The expected events are written out by hand; the property test cuts one stream at every
kind of boundary (mid-line, between CR and LF, one byte at a time) and wants the same events.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sse import SSEParser

STREAM = (b": a comment\n"
          b"data: {\"a\": 1}\n\n"
          b"event: message\r\nid: 7\r\ndata:{\"b\": 2}\r\n\r\n"  # CRLF, no space after the colon
          b"data: line one\ndata:  two\ndata\n\n"  # several data lines, a value's second space kept
          b"retry: 10\n\n"  # an event with no data is not one
          b"data: [DONE]\n\n"
          b"data: {\"after\": 1}\n\n")
EVENTS = [b"{\"a\": 1}", b"{\"b\": 2}", b"line one\n two\n"]


def feed_all(pieces: list[bytes]) -> tuple[list[bytes], SSEParser]:
    parser = SSEParser()
    out: list[bytes] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out, parser


def test_events_in_one_piece() -> None:
    out, parser = feed_all([STREAM])
    assert out == EVENTS
    assert parser.done  # and nothing after [DONE] came back


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_events_whatever_the_pieces(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    out, parser = feed_all([STREAM[a:b] for a, b in itertools.pairwise(bounds)])
    assert out == EVENTS and parser.done


def test_one_byte_at_a_time() -> None:
    out, parser = feed_all([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert out == EVENTS and parser.done


def test_an_event_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: {\"x\": 1}\n") == []
    assert parser.feed(b"\n") == [b"{\"x\": 1}"]
    assert not parser.done


def test_done_only_as_a_whole_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE] \n\ndata: [DONE]\ndata: x\n\n") == [b"[DONE] ", b"[DONE]\nx"]
    assert not parser.done
    assert parser.feed(b"data: [DONE]\r\n\r\n") == [] and parser.done
    assert parser.feed(b"data: late\n\n") == []
