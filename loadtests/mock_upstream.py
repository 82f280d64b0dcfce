"""A fast mock of OpenAI's chat completions API, for gateway benchmarks on loopback.

Raw asyncio Protocol on uvloop with hand-written HTTP/1.1 keep-alive parsing, so that
the mock is never the bottleneck of a benchmark (measure it: ``gateway_bench.py`` runs
the "direct" system against it in every run).

Routes:
  POST /v1/chat/completions   non-stream: a ``chat.completion`` with usage;
                              stream: ``--chunks`` ``chat.completion.chunk`` SSE events,
                              a usage chunk (empty ``choices``), then ``data: [DONE]``,
                              with an optional ``--chunk-delay-ms`` between chunks;
                              a model named ``mock-paced*`` always streams with
                              ``--paced-delay-ms`` (default 5) between chunks.
  GET  /v1/models             one model list
  GET  /health                200

Run:  python loadtests/mock_upstream.py --port 18001 [--workers 1] [--chunks 8]
It binds 127.0.0.1 only. With ``--workers N`` it runs N processes on one port (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import signal
import socket
import sys
import time

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - the project's venv has it
    uvloop = None

MAX_HEADER = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

_ids = itertools.count(1)
_pid = os.getpid()


def _status(code: int, reason: str, ctype: bytes, body: bytes, keep_alive: bool = True) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
        % (code, reason.encode(), ctype, len(body), b"" if keep_alive else b"connection: close\r\n")
        + body
    )


class Mock:
    """Pre-computes as much of every reply as it can."""

    def __init__(self, chunks: int, chunk_delay_s: float, content_words: int,
                 paced_delay_s: float = 0.005) -> None:
        self.chunks = max(1, chunks)
        self.chunk_delay_s = chunk_delay_s
        self.paced_delay_s = paced_delay_s  # for models named mock-paced*
        words = ["hello"] + ["world"] * (max(1, content_words) - 1)
        self.content = " ".join(words)
        self.models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}
                ],
            }
        )

    def completion(self, model: str) -> bytes:
        n = next(_ids)
        return orjson.dumps(
            {
                "id": f"chatcmpl-mock-{_pid}-{n}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.content},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": self.chunks,
                    "total_tokens": 12 + self.chunks,
                },
            }
        )

    def stream_events(self, model: str) -> list[bytes]:
        """SSE events (each ``data: ...\\n\\n``), already framed as HTTP chunks."""
        n = next(_ids)
        cid = f"chatcmpl-mock-{_pid}-{n}"
        created = int(time.time())
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        events = []
        pieces = self.content.split(" ")
        for i in range(self.chunks):
            delta: dict = {"content": (pieces[i % len(pieces)] + " ")}
            if i == 0:
                delta["role"] = "assistant"
            last = i == self.chunks - 1
            events.append(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": delta,
                            "logprobs": None,
                            "finish_reason": "stop" if last else None,
                        }
                    ],
                }
            )
        events.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": self.chunks,
                    "total_tokens": 12 + self.chunks,
                },
            }
        )
        out = [_chunk(b"data: " + orjson.dumps(e) + b"\n\n") for e in events]
        out.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return out


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; requests handled strictly in order."""

    __slots__ = ("mock", "transport", "buf", "busy", "closed")

    def __init__(self, mock: Mock) -> None:
        self.mock = mock
        self.transport = None
        self.buf = bytearray()
        self.busy = False  # a streaming reply with delays is in flight
        self.closed = False

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

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        out = []
        while True:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER:
                    self._fail(431, "Request Header Fields Too Large")
                break
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self._fail(400, "Bad Request")
                return
            clen = 0
            chunked = False
            keep_alive = version == "HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    clen = int(value)
                elif name == "transfer-encoding":
                    chunked = "chunked" in value.lower()
                elif name == "connection":
                    v = value.strip().lower()
                    if v == "close":
                        keep_alive = False
                    elif v == "keep-alive":
                        keep_alive = True
            start = end + 4
            if chunked:
                body, consumed = _dechunk(buf, start)
                if body is None:
                    break
                del buf[:consumed]
            else:
                if clen > MAX_BODY:
                    self._fail(413, "Payload Too Large")
                    return
                if len(buf) < start + clen:
                    break
                body = bytes(buf[start : start + clen])
                del buf[: start + clen]
            reply = self._handle(method, target.split("?", 1)[0], body, keep_alive)
            if isinstance(reply, bytes):
                out.append(reply)
                if not keep_alive:
                    break
            else:  # a delayed stream: finish it before parsing the next request
                if out:
                    self.transport.write(b"".join(out))
                    out = []
                self.busy = True
                asyncio.ensure_future(self._stream(reply[1], reply[0], keep_alive))
                return
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
            if not keep_alive:
                self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        body = orjson.dumps({"error": {"message": reason, "type": "invalid_request_error"}})
        self.transport.write(_status(code, reason, b"application/json", body, keep_alive=False))
        self.transport.close()

    def _handle(self, method: str, path: str, body: bytes, keep_alive: bool):
        mock = self.mock
        if method == "POST" and path == "/v1/chat/completions":
            try:
                req = orjson.loads(body)
                model = req.get("model") or "mock-model"
                stream = bool(req.get("stream"))
            except (orjson.JSONDecodeError, AttributeError):
                body = orjson.dumps(
                    {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}}
                )
                return _status(400, "Bad Request", b"application/json", body, keep_alive)
            if not isinstance(model, str):
                model = "mock-model"
            if not stream:
                return _status(200, "OK", b"application/json", mock.completion(model), keep_alive)
            events = mock.stream_events(model)
            head = STREAM_HEAD if keep_alive else STREAM_HEAD[:-2] + b"connection: close\r\n\r\n"
            delay = mock.paced_delay_s if model.startswith("mock-paced") else mock.chunk_delay_s
            if delay <= 0:
                return head + b"".join(events)
            return (delay, [head] + events)
        if method == "GET" and path == "/v1/models":
            return _status(200, "OK", b"application/json", mock.models_body, keep_alive)
        if method == "GET" and path in ("/health", "/v1/health"):
            return _status(200, "OK", b"application/json", b'{"status":"ok"}', keep_alive)
        body = orjson.dumps({"error": {"message": "not found", "type": "invalid_request_error"}})
        return _status(404, "Not Found", b"application/json", body, keep_alive)

    async def _stream(self, parts: list[bytes], delay: float, keep_alive: bool) -> None:
        t = self.transport
        t.write(parts[0] + parts[1])  # headers + first event at once
        for p in parts[2:]:
            await asyncio.sleep(delay)
            if self.closed:
                return
            t.write(p)
        self.busy = False
        if not keep_alive:
            t.close()
            return
        if self.buf:
            self._process()


def _dechunk(buf: bytearray, pos: int):
    """Decode a chunked body starting at pos; (body, end) or (None, 0) when incomplete."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            # skip trailers
            end = buf.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                return None, 0
            return b"".join(parts), end + 4
        if len(buf) < pos + size + 2:
            return None, 0
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


def _make_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve(host: str, port: int, chunks: int, delay_ms: float, words: int, paced_ms: float,
          reuse_port: bool, sock=None):
    global _pid
    _pid = os.getpid()
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    mock = Mock(chunks, delay_ms / 1000.0, words, paced_ms / 1000.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        s = sock or _make_socket(host, port, reuse_port)
        server = await loop.create_server(lambda: HttpProtocol(mock), sock=s, backlog=4096)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18001)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=8, help="content chunks per streamed reply")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0)
    ap.add_argument("--words", type=int, default=8, help="words in the non-stream reply")
    ap.add_argument("--paced-delay-ms", type=float, default=5.0,
                    help="delay between chunks for models named mock-paced*")
    a = ap.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("mock_upstream binds loopback only")
    args = (a.host, a.port, a.chunks, a.chunk_delay_ms, a.words, a.paced_delay_ms)
    if a.workers <= 1:
        serve(*args, reuse_port=False)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=serve, args=args + (True,), daemon=True) for _ in range(a.workers)]
    for p in procs:
        p.start()

    def stop(*_):
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
