"""A minimal HTTP/1.1 keep-alive client on raw asyncio Protocols (uvloop friendly).

Used by the load generator (time to first SSE event) and by the hot-path study as the
"raw" upstream client. One connection carries one request at a time; ``RawPool`` keeps
idle connections for reuse. Responses with content-length, chunked, or read-to-close
bodies are supported. No TLS, no redirects, no proxies: loopback benchmarking only.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque

perf = time.perf_counter


class HttpError(Exception):
    pass


class Response:
    __slots__ = ("status", "headers", "body", "t_first_event", "t_done")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes,
                 t_first_event: float | None, t_done: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.t_first_event = t_first_event
        self.t_done = t_done


class HttpConn(asyncio.Protocol):
    """One keep-alive connection. ``await conn.request(raw_request_bytes)``."""

    def __init__(self) -> None:
        self.transport = None
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.closed = False
        self.reusable = True
        self.on_data = None  # optional callback(bytes) for streamed body pieces
        self._reset()

    def _reset(self) -> None:
        self.state = 0  # 0 headers, 1 fixed body, 2 chunked, 3 until close
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.remaining = 0
        self.parts: list[bytes] = []
        self.t_first = None
        self.head = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.reusable = False
        fut = self.fut
        if fut is not None and not fut.done():
            if self.state == 3:
                self._finish()
            else:
                fut.set_exception(HttpError(f"connection lost: {exc!r}"))

    def request(self, raw: bytes) -> asyncio.Future:
        if self.closed:
            raise HttpError("connection closed")
        self._reset()
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.fut

    def _body(self, piece: bytes) -> None:
        if self.t_first is None:
            self.head += piece
            if b"\n\n" in self.head:  # the first complete SSE event
                self.t_first = perf()
        self.parts.append(piece)
        if self.on_data is not None:
            self.on_data(piece)

    def _finish(self) -> None:
        fut = self.fut
        self.fut = None
        if fut is not None and not fut.done():
            fut.set_result(Response(self.status, self.headers, b"".join(self.parts),
                                    self.t_first, perf()))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            st = self.state
            if st == 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                parts = lines[0].split(" ", 2)
                self.status = int(parts[1])
                clen = -1
                chunked = False
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    k = k.strip().lower()
                    v = v.strip()
                    self.headers.append((k, v))
                    if k == "content-length":
                        clen = int(v)
                    elif k == "transfer-encoding" and "chunked" in v.lower():
                        chunked = True
                    elif k == "connection" and v.lower() == "close":
                        self.reusable = False
                if parts[0] == "HTTP/1.0":
                    self.reusable = False
                if chunked:
                    self.state = 2
                    self.remaining = -1
                elif clen >= 0:
                    self.state = 1
                    self.remaining = clen
                    if clen == 0:
                        self.state = 0
                        self._finish()
                        return
                else:
                    self.state = 3
                    self.reusable = False
            elif st == 1:
                if not buf:
                    return
                take = min(self.remaining, len(buf))
                self._body(bytes(buf[:take]))
                del buf[:take]
                self.remaining -= take
                if self.remaining == 0:
                    self.state = 0
                    self._finish()
                    return
            elif st == 2:
                if self.remaining < 0:  # need a size line
                    eol = buf.find(b"\r\n")
                    if eol < 0:
                        return
                    size = int(bytes(buf[:eol]).split(b";", 1)[0], 16)
                    if size == 0:
                        end = buf.find(b"\r\n\r\n", eol)
                        if end < 0:
                            return
                        del buf[: end + 4]
                        self.state = 0
                        self._finish()
                        return
                    del buf[: eol + 2]
                    self.remaining = size
                if not buf:
                    return
                if len(buf) >= self.remaining:
                    self._body(bytes(buf[: self.remaining]))
                    del buf[: self.remaining]
                    self.state = 4
                else:  # deliver what we have: keeps streaming latency honest
                    self._body(bytes(buf))
                    self.remaining -= len(buf)
                    buf.clear()
                    return
            elif st == 4:  # CRLF after a chunk's data
                if len(buf) < 2:
                    return
                del buf[:2]
                self.state = 2
                self.remaining = -1
            else:  # st == 3: read until close
                if buf:
                    self._body(bytes(buf))
                    buf.clear()
                return


async def connect(host: str, port: int) -> HttpConn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HttpConn, host, port)
    return proto


class RawPool:
    """Keep-alive pool for one host:port; ``await pool.request(method, path, body, headers)``."""

    def __init__(self, host: str, port: int, limit: int = 100) -> None:
        self.host = host
        self.port = port
        self.idle: deque[HttpConn] = deque()
        self.sem = asyncio.Semaphore(limit)
        self.hostline = f"{host}:{port}".encode()

    def build(self, method: str, path: str, body: bytes = b"",
              headers: list[tuple[str, str]] | None = None) -> bytes:
        h = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers or ())
        return b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
            method.encode(), path.encode(), self.hostline, len(body), h, body)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: list[tuple[str, str]] | None = None) -> Response:
        raw = self.build(method, path, body, headers)
        async with self.sem:
            conn = None
            while self.idle:
                c = self.idle.pop()
                if not c.closed:
                    conn = c
                    break
            retry = conn is not None  # a stale keep-alive connection gets one retry
            if conn is None:
                conn = await connect(self.host, self.port)
            try:
                resp = await conn.request(raw)
            except HttpError:
                if not retry:
                    raise
                conn = await connect(self.host, self.port)
                resp = await conn.request(raw)
            if conn.reusable and not conn.closed:
                self.idle.append(conn)
            else:
                conn.transport.close()
            return resp

    async def close(self) -> None:
        while self.idle:
            self.idle.pop().transport.close()
