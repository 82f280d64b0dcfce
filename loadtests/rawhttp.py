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


class StreamResponse:
    """Body pieces of a streamed response, as they arrive: ``async for piece in resp``."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.pieces: deque[bytes] = deque()
        self.done = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future | None = None

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _push(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self._wake()

    def _end(self, error: Exception | None = None) -> None:
        self.done = True
        self.error = error
        self._wake()

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        while not self.pieces:
            if self.done:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.pieces.popleft()


class HttpConn(asyncio.Protocol):
    """One keep-alive connection. ``await conn.request(raw_request_bytes)``."""

    def __init__(self) -> None:
        self.transport = None
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.closed = False
        self.reusable = True
        self.on_data = None  # optional callback(bytes) for streamed body pieces
        self.sr: StreamResponse | None = None  # set while a streamed response is in flight
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
        if self.state == 3:
            self._finish()
            return
        if self.sr is not None and not self.sr.done:
            self.sr._end(HttpError(f"connection lost: {exc!r}"))
            self.sr = None
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_exception(HttpError(f"connection lost: {exc!r}"))

    def request(self, raw: bytes) -> asyncio.Future:
        if self.closed:
            raise HttpError("connection closed")
        self._reset()
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.fut

    def request_stream(self, raw: bytes) -> asyncio.Future:
        """Resolves to a StreamResponse once the headers are in; the body follows through it."""
        fut = self.request(raw)
        self.sr = StreamResponse()
        return fut

    def _body(self, piece: bytes) -> None:
        if self.sr is not None:
            self.sr._push(piece)
            return
        if self.t_first is None:
            self.head += piece
            if b"\n\n" in self.head:  # the first complete SSE event
                self.t_first = perf()
        self.parts.append(piece)
        if self.on_data is not None:
            self.on_data(piece)

    def _finish(self) -> None:
        sr = self.sr
        if sr is not None:
            self.sr = None
            self.fut = None
            sr._end()
            return
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
                sr = self.sr
                if sr is not None:
                    sr.status = self.status
                    sr.headers = self.headers
                    if self.fut is not None and not self.fut.done():
                        self.fut.set_result(sr)
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

    def stream(self, method: str, path: str, body: bytes = b"",
               headers: list[tuple[str, str]] | None = None) -> _Stream:
        """``async with pool.stream(...) as resp: async for piece in resp: ...``"""
        return _Stream(self, self.build(method, path, body, headers))

    async def close(self) -> None:
        while self.idle:
            self.idle.pop().transport.close()


class _Stream:
    def __init__(self, pool: RawPool, raw: bytes) -> None:
        self.pool = pool
        self.raw = raw
        self.conn: HttpConn | None = None
        self.resp: StreamResponse | None = None

    async def __aenter__(self) -> StreamResponse:
        pool = self.pool
        await pool.sem.acquire()
        try:
            conn = None
            while pool.idle:
                c = pool.idle.pop()
                if not c.closed:
                    conn = c
                    break
            retry = conn is not None
            if conn is None:
                conn = await connect(pool.host, pool.port)
            try:
                self.resp = await conn.request_stream(self.raw)
            except HttpError:
                if not retry:
                    raise
                conn = await connect(pool.host, pool.port)
                self.resp = await conn.request_stream(self.raw)
            self.conn = conn
            return self.resp
        except BaseException:
            pool.sem.release()
            raise

    async def __aexit__(self, *exc) -> None:
        conn, resp = self.conn, self.resp
        self.pool.sem.release()
        if resp is not None and resp.done and resp.error is None and conn.reusable \
                and not conn.closed:
            self.pool.idle.append(conn)
        else:  # not read to the end (client went away): the connection cannot be reused
            conn.sr = None
            conn.transport.close()
