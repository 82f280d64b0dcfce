"""The byte relay: a chunk stream (chat's or the legacy completions') relayed without parsing it.

A chunk reaches the client as the upstream's bytes with our id in place of the upstream's: the id is
learnt from the first chunk (the one chunk always parsed) and replaced as the quoted JSON string it
is, which a chunk's text cannot hold unescaped. Only a chunk that names ``"usage"`` with a value is
parsed too: usage is kept for the cost, the metrics and the key's limits, and taken out again when the
client did not ask for it (the gateway always asks the upstream). Nothing else is parsed per chunk.

The record's reply is assembled once, from every chunk, off the serving core: a 200 whose usage
came carries its chunks (``InteractionRecord.chunks``) to the log writer, which builds the
``chat.completion`` (or ``text_completion``) there (``gateway.log.chunks``). Another outcome (a cut
stream, a 499, a stream without usage) is rare and assembled here, at its end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.assemble import ChunkAssembler

SEP = b"\x1e"  # between the chunks a record carries: a control character no JSON text holds unescaped


def parse(joined: bytes) -> list[dict[str, Any]]:
    """The chunks of ``SEP``-joined events, parsed at once; an event that is not a JSON object is
    skipped (the relay passed it on as it came; the record keeps what parses)."""
    try:
        chunks = orjson.loads(b"[" + joined.replace(SEP, b",") + b"]")
    except orjson.JSONDecodeError:
        chunks = []
        for event in joined.split(SEP):
            try:
                chunks.append(orjson.loads(event))
            except orjson.JSONDecodeError:
                continue
    return [c for c in chunks if isinstance(c, dict)]


class RawChunks:
    """The relay's state for one stream: ``frame`` each chunk's bytes; the record at the end."""

    __slots__ = ("events", "usage", "upstream_id", "_up", "_id", "_ours", "_make", "_built")

    def __init__(self, make: Callable[[], ChunkAssembler], our_id: str) -> None:
        self.events: list[bytes] = []
        self.usage: dict[str, Any] | None = None
        self.upstream_id: str | None = None
        self._up: bytes | None = None  # the upstream id as its quoted JSON string
        self._id = our_id
        self._ours = orjson.dumps(our_id)
        self._make = make
        self._built: ChunkAssembler | None = None

    def frame(self, data: bytes, want_usage: bool) -> bytes | None:
        """The client's SSE event for one chunk, or None when there is none (our own usage chunk)."""
        self.events.append(data)
        up = self._up
        if up is not None and up in data:
            if b'"usage"' not in data:
                return b"data: " + data.replace(up, self._ours, 1) + b"\n\n"
            if b',"usage":null' in data:  # OpenAI's null usage on every chunk, once usage is asked for
                if not want_usage:
                    data = data.replace(b',"usage":null', b"", 1)
                return b"data: " + data.replace(up, self._ours, 1) + b"\n\n"
        chunk = orjson.loads(data)
        if up is None and isinstance(chunk.get("id"), str):
            self.upstream_id = chunk["id"]
            self._up = orjson.dumps(chunk["id"])
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if "usage" in chunk and not want_usage:
            if not chunk.get("choices"):
                return None  # the usage chunk was asked for by us, not by the client
            del chunk["usage"]
        chunk["id"] = self._id
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def assembled(self) -> ChunkAssembler:
        """The stream so far, assembled here (a cut stream's record, or one without usage)."""
        if self._built is None:
            self._built = self._make()
            for chunk in parse(SEP.join(self.events)):
                self._built.add(chunk)
        return self._built

    @property
    def deltas(self) -> int:
        return self.assembled().deltas

    def completion(self, gateway_id: str, created: int) -> dict[str, Any]:
        return self.assembled().completion(gateway_id, created)  # type: ignore[attr-defined]

    def for_record(self, gateway_id: str, created: int, status: int) -> tuple[dict[str, Any], str | None]:
        """(the reply as the finish needs it, the chunks for the writer to assemble, if deferred).
        A 200 with usage is deferred: the finish needs only its usage."""
        if status == 200 and self.usage is not None:
            return {"usage": self.usage}, SEP.join(self.events).decode(errors="replace")
        return self.completion(gateway_id, created), None
