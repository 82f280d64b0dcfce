"""A small HTTP/1.1 keep-alive client pool on asyncio Protocols, for the vLLM provider.

The project's one HTTP/1 client: the benchmarks' load generator and the hot-path study use it too.

Why not aiohttp or httpx: measured on the hot path (loadtests/results/hotpath-study.md),
aiohttp costs about as much per request as the whole rest of the gateway, and httpx 5-10x
more; this pool reaches ~3x aiohttp's requests/s. It does only what talking to vLLM on a
private network needs: plain HTTP/1.1, keep-alive, content-length or chunked bodies,
streaming reads with back-pressure. Response parsing is httptools' (the C parser uvicorn
uses), not ours.

    pool = Pool("127.0.0.1", 8001, limit=256, connect_timeout=5)
    ex = await pool.request(b"POST", b"/v1/chat/completions", body, timeout=60)
    status, headers = ex.status, ex.headers   # headers received
    data = await ex.read()                     # whole body (returns the connection to the pool)
    async for piece in ex.iter_body(): ...     # or stream it; ex.close() drops a cut stream
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator

import httptools

HIGH_WATER = 64  # buffered body pieces before we stop reading from the socket


class ConnectError(ConnectionError):
    """The connection could not be made (the request never left)."""


class ProtocolError(ConnectionError):
    """The connection broke or the peer spoke bad HTTP after the request was sent."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"bad HTTP from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.exchange is not None and not self.exchange.complete:
            self._fail(ProtocolError(f"upstream closed the connection: {exc or 'EOF'}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.exchange is not None
        self.exchange.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        assert ex is not None
        ex.status = self.parser.get_status_code()
        ex.keep_alive = self.parser.should_keep_alive()
        if not ex.head.done():
            ex.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.exchange is not None
        self.exchange._piece(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        assert ex is not None
        ex.complete = True
        ex._wake()
        if ex.released:
            self._recycle()

    def _fail(self, exc: Exception) -> None:
        ex = self.exchange
        if ex is not None:
            ex.error = exc
            if not ex.head.done():
                ex.head.set_exception(exc)
            ex._wake()

    def _recycle(self) -> None:
        ex, self.exchange = self.exchange, None
        if ex is not None and ex.keep_alive and not self.closed:
            self.parser = httptools.HttpResponseParser(self)
            self.pool._give_back(self)
        else:
            self.close()
            self.pool._forget()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Exchange:
    """One request/response on a connection."""

    __slots__ = ("conn", "head", "status", "headers", "keep_alive", "pieces", "complete",
                 "error", "released", "_waiter")

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = False
        self.pieces: deque[bytes] = deque()
        self.complete = False
        self.error: Exception | None = None
        self.released = False
        self._waiter: asyncio.Future[None] | None = None

    def _piece(self, data: bytes) -> None:
        self.pieces.append(data)
        if len(self.pieces) >= HIGH_WATER and self.conn.transport is not None:
            self.conn.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body as it arrives; leaving early (or an error) releases the exchange."""
        transport = self.conn.transport
        try:
            while True:
                while self.pieces:
                    piece = self.pieces.popleft()
                    if transport is not None and len(self.pieces) < HIGH_WATER // 2:
                        transport.resume_reading()
                    yield piece
                if self.error is not None:
                    raise self.error
                if self.complete:
                    return
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                self._waiter = None
        finally:
            self.release()

    async def read(self) -> bytes:
        if self.complete and self.error is None and len(self.pieces) < HIGH_WATER // 2:
            # all in already (a small body comes with its headers): no generator; reading was
            # never paused below this mark, so there is nothing to resume
            data = b"".join(self.pieces)
            self.pieces.clear()
            self.release()
            return data
        return b"".join([piece async for piece in self.iter_body()])

    def release(self) -> None:
        """Done with the exchange: a complete one gives its connection back to the pool."""
        if self.released:
            return
        self.released = True
        self.conn.pool.sem.release()
        if self.complete:
            self.conn._recycle()
        else:  # a cut stream: the connection is in an unknown state
            self.conn.close()
            self.conn.exchange = None
            self.conn.pool._forget()

    close = release


class Pool:
    def __init__(self, host: str, port: int, *, limit: int = 256, connect_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.idle: deque[_Conn] = deque()
        self.sem = asyncio.Semaphore(limit)
        self.connect_timeout = connect_timeout
        self.open = 0
        self._host_line = f"{host}:{port}".encode()

    def _give_back(self, conn: _Conn) -> None:
        self.idle.append(conn)

    def _forget(self) -> None:
        self.open -= 1

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(self), self.host, self.port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self.open += 1
        return conn

    def _encode(self, method: bytes, path: bytes, body: bytes, headers: bytes) -> bytes:
        return b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
            method, path, self._host_line, len(body), headers, body)

    async def request(self, method: bytes, path: bytes, body: bytes = b"",
                      headers: bytes = b"content-type: application/json\r\n") -> Exchange:
        """Send a request; returns once the response's headers are in."""
        await self.sem.acquire()
        try:
            return await self._send(self._encode(method, path, body, headers))
        except BaseException:
            self.sem.release()
            raise

    async def _send(self, raw: bytes) -> Exchange:
        reused = False
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                reused = True
                break
            self._forget()
        else:
            conn = await self._connect()
        ex = conn.exchange = Exchange(conn)
        assert conn.transport is not None
        conn.transport.write(raw)
        try:
            await ex.head
        except ProtocolError:
            conn.exchange = None
            conn.close()
            self._forget()
            if not reused or ex.pieces:
                raise
            # a keep-alive connection the server had closed: one fresh try, nothing was received
            conn = await self._connect()
            ex = conn.exchange = Exchange(conn)
            assert conn.transport is not None
            conn.transport.write(raw)
            await ex.head
        except BaseException:  # cancelled (a timeout): the connection's state is unknown
            conn.exchange = None
            conn.close()
            self._forget()
            raise
        return ex

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
