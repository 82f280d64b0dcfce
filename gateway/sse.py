"""Server-sent events: the project's one parser.

Every stream of ``data:`` events the project reads goes through ``SSEParser``: the vLLM and
OpenAI providers' upstream streams, and the benchmarks' clients (load generator, engine and
fairness benchmarks, hot-path study). Feed it bytes as they arrive, in any pieces; it returns
the data of every event those bytes complete.

Framing as the SSE standard (WHATWG HTML, "server-sent events") has it, for what a chat
completion stream uses: lines end with LF or CRLF; a ``data:`` field's value loses one
leading space; several ``data:`` lines of one event are joined with LF; a blank line ends the
event; comments (``:``) and the other fields (``event``, ``id``, ``retry``) are skipped. The
OpenAI convention's ``data: [DONE]`` ends the stream: ``done`` turns true, and nothing after
it is returned. A lone CR as a line end (allowed by the standard, sent by no OpenAI-compatible
server) is not recognised.

    parser = SSEParser()
    async for piece in body:
        for data in parser.feed(piece):
            chunk = orjson.loads(data)
        if parser.done:
            break
"""

from __future__ import annotations

DONE = b"[DONE]"


class SSEParser:
    """Incremental: ``feed(piece)`` returns the data of the events completed by ``piece``."""

    __slots__ = ("_rest", "_data", "done")

    def __init__(self) -> None:
        self._rest = b""  # an unfinished line
        self._data: bytes | None = None  # the current event's data, while it has some
        self.done = False  # ``[DONE]`` was read

    def feed(self, piece: bytes) -> list[bytes]:
        if self.done:
            return []
        if self._rest:
            piece = self._rest + piece
        if 13 in piece:  # CRLF line ends (a CR at the end waits in _rest for its LF); 13 is CR,
            # as an int: memchr, several times faster than ``b"\r" in piece`` on 3.11
            piece = piece.replace(b"\r\n", b"\n")
        lines = piece.split(b"\n")
        self._rest = lines.pop()
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:  # a blank line ends the event
                if data is not None:
                    if data == DONE:
                        self.done = True
                        self._data = None
                        return out
                    out.append(data)
                    data = None
                continue
            if line.startswith(b"data: "):
                value = line[6:]
            elif line.startswith(b"data:") or line == b"data":  # no colon: an empty value
                value = line[5:]
            else:  # a comment, or a field the chat stream does not use
                continue
            data = value if data is None else data + b"\n" + value
        self._data = data
        return out
