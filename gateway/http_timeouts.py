"""Read timeouts that uvicorn's httptools protocol lacks (slow or silent clients).

uvicorn closes a keep-alive connection that stays idle ``timeout_keep_alive`` seconds
(5) after a response, but it has no limit on a connection that never sends a request, on
a request's headers or on its body: a client trickling bytes holds a socket (and, for a
body, a waiting request) forever. This protocol adds:

* a new connection must start a request within ``timeout_keep_alive`` (closed quietly,
  as uvicorn closes an idle keep-alive connection);
* a request's headers and body must all arrive within ``TUNELOOP_BODY_TIMEOUT_S``
  seconds (default 30) of its first byte, else the client gets 408 in OpenAI's envelope
  and the connection is closed (the app, if it was waiting for the body, sees a
  disconnect).

One timer per request, armed at its first byte and cancelled when its body is complete.
What is left: responses are not bounded (a stream may last as long as the upstream's
``timeout_s``), nor is a client that reads a response slowly (uvicorn's flow control
pauses the writer; the upstream's timeout ends it), and a pipelined request waiting
behind a response in progress is not timed until that response ends.

Used by ``tuneloop serve`` as ``http=HTTP_PROTOCOL``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import RequestTimeout

HTTP_PROTOCOL = "gateway.http_timeouts:TimedHttpToolsProtocol"


def _timeout_response(seconds: float) -> bytes:
    body = RequestTimeout(f"The request's headers and body did not arrive within {seconds:g} s.").body()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))


class TimedHttpToolsProtocol(HttpToolsProtocol):
    read_timeout_s = float(os.environ.get("TUNELOOP_BODY_TIMEOUT_S", "30"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, callback: Any) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.timeout_keep_alive, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.read_timeout_s, self._too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _idle(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _too_slow(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        timed = cycle is not None and cycle.scope is self.scope  # the slow request's headers are in
        if self.pipeline or (not timed and cycle is not None and not cycle.response_complete):
            self._arm(self.read_timeout_s, self._too_slow)  # it waits behind a response going out
            return
        if not (timed and cycle.response_started):  # (answered already: only close)
            self.transport.write(_timeout_response(self.read_timeout_s))
        self.transport.close()
