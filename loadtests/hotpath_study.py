"""Hot-path study: which ASGI server x framework x upstream client for a Python gateway?

The hot path, as a gateway does it for a non-stream chat completion:
receive the POST body, orjson-parse it (routing needs ``model``), forward the body bytes
to the upstream over a pooled keep-alive client, orjson-parse the reply, replace ``id``
with our own, re-serialize, return. Streaming: relay the upstream's SSE bytes chunk by chunk.

As an app (env selects the variant; served by uvicorn or granian):
    HP_FRAMEWORK=raw|fastapi|rsgi  HP_CLIENT=aiohttp|httpx|raw  HP_UPSTREAM=http://127.0.0.1:PORT
(``raw``: the gateway's own keep-alive pool, ``gateway.providers.http1``)
As the study driver (starts the mock, each variant in turn, wrk at c16; writes markdown):
    python loadtests/hotpath_study.py --run [--duration 5] [--rounds 2] [--out FILE]
"""


import os
import sys
import urllib.parse
import uuid

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gateway.sse import SSEParser  # noqa: E402

FRAMEWORK = os.environ.get("HP_FRAMEWORK", "raw")
CLIENT = os.environ.get("HP_CLIENT", "aiohttp")
UPSTREAM = os.environ.get("HP_UPSTREAM", "http://127.0.0.1:18001")
PATH = "/v1/chat/completions"
PATH_B = PATH.encode()
STREAM_WORK = os.environ.get("HP_STREAM_WORK") == "1"
_u = urllib.parse.urlsplit(UPSTREAM)

_client = None


async def _get_client():
    global _client
    if _client is not None:
        return _client
    if CLIENT == "aiohttp":
        import aiohttp

        conn = aiohttp.TCPConnector(limit=256, ttl_dns_cache=None, enable_cleanup_closed=False)
        _client = aiohttp.ClientSession(UPSTREAM, connector=conn, auto_decompress=False,
                                        skip_auto_headers=("User-Agent", "Accept-Encoding"))
    elif CLIENT == "httpx":
        import httpx

        _client = httpx.AsyncClient(base_url=UPSTREAM, limits=httpx.Limits(
            max_connections=256, max_keepalive_connections=256), timeout=30)
    else:
        from gateway.providers.http1 import Pool

        _client = Pool(_u.hostname or "127.0.0.1", _u.port or 80, limit=256)
    return _client


HDRS = {"content-type": "application/json"}


async def forward(body: bytes) -> tuple[int, bytes]:
    c = await _get_client()
    if CLIENT == "aiohttp":
        async with c.post(PATH, data=body, headers=HDRS) as r:
            return r.status, await r.read()
    if CLIENT == "httpx":
        r = await c.post(PATH, content=body, headers=HDRS)
        return r.status_code, r.content
    ex = await c.request(b"POST", PATH_B, body)  # content-type: application/json by default
    return ex.status, await ex.read()


async def forward_stream(body: bytes):
    """Yields the upstream's body pieces as they arrive."""
    c = await _get_client()
    if CLIENT == "aiohttp":
        async with c.post(PATH, data=body, headers=HDRS) as r:
            async for piece in r.content.iter_any():
                yield piece
    elif CLIENT == "httpx":
        async with c.stream("POST", PATH, content=body, headers=HDRS) as r:
            async for piece in r.aiter_raw():
                yield piece
    else:
        ex = await c.request(b"POST", PATH_B, body)
        async for piece in ex.iter_body():
            yield piece


async def hot_path(body: bytes) -> tuple[int, bytes]:
    req = orjson.loads(body)
    _model = req.get("model")  # routing would pick the target here
    status, data = await forward(body)
    if status != 200:
        return status, data
    resp = orjson.loads(data)
    resp["id"] = "chatcmpl-" + uuid.uuid4().hex
    return 200, orjson.dumps(resp)


# ------------------------------------------------------------------ raw ASGI

async def raw_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
        return
    if b'"stream":true' in body.replace(b" ", b""):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        if not STREAM_WORK:
            async for piece in forward_stream(body):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        # what a gateway must do: parse the request, rewrite the id in every chunk, keep the
        # pieces, and assemble the record after the last byte went out
        orjson.loads(body)
        ours = b"chatcmpl-" + uuid.uuid4().hex.encode()
        theirs = None
        kept = []
        async for piece in forward_stream(body):
            if theirs is None:
                i = piece.find(b'"id":"')
                if i >= 0:
                    theirs = piece[i + 6:piece.index(b'"', i + 6)]
            if theirs is not None:
                piece = piece.replace(theirs, ours)
            kept.append(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        text, usage = [], None
        for data in SSEParser().feed(b"".join(kept)):
            ev = orjson.loads(data)
            for ch in ev.get("choices") or ():
                c = ch.get("delta", {}).get("content")
                if c:
                    text.append(c)
            usage = ev.get("usage") or usage
        _record = ("".join(text), usage)
        return
    status, out = await hot_path(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


# ------------------------------------------------------------------ FastAPI

def _fastapi_app():
    from fastapi import FastAPI, Request
    from fastapi.responses import Response, StreamingResponse

    fa = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @fa.get("/health")
    async def health():
        return Response(b'{"status":"ok"}', media_type="application/json")

    @fa.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.body()
        if b'"stream":true' in body.replace(b" ", b""):
            return StreamingResponse(forward_stream(body), media_type="text/event-stream")
        status, out = await hot_path(body)
        return Response(out, status_code=status, media_type="application/json")

    return fa


# ------------------------------------------------------------------ granian RSGI

class RsgiApp:
    async def __rsgi__(self, scope, proto):
        if scope.method == "GET":
            proto.response_bytes(200, [("content-type", "application/json")], b'{"status":"ok"}')
            return
        body = await proto()
        status, out = await hot_path(body)
        proto.response_bytes(status, [("content-type", "application/json")], out)


if FRAMEWORK == "fastapi":
    app = _fastapi_app()
elif FRAMEWORK == "rsgi":
    app = RsgiApp()
else:
    app = raw_app


# ------------------------------------------------------------------ driver

def run_study(duration: float, rounds: int, out: str, granian: str | None,
              pin: bool, concurrency: int, stream: bool = False) -> str:
    import statistics
    import tempfile
    import time

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import loadgen

    here = os.path.dirname(os.path.abspath(__file__))
    venv_py = sys.executable
    req = {"model": "mock-model",
           "messages": [{"role": "user", "content": "Say hello in one word."}],
           "max_tokens": 16, "temperature": 0}
    body = orjson.dumps(req)
    sbody = orjson.dumps({**req, "stream": True})

    def load(url: str):
        if stream:
            return loadgen.run_raw_subprocess(url, sbody, concurrency, duration, stream=True,
                                              cpus=cpu_gen)
        return loadgen.run_wrk(url, body, concurrency, duration, cpus=cpu_gen)

    cpu_sut, cpu_gen = ("1", "0") if pin else (None, None)
    logdir = tempfile.mkdtemp(prefix="hotpath-")
    mport = loadgen.free_port()
    mock = loadgen.start([venv_py, os.path.join(here, "mock_upstream.py"), "--port", str(mport)],
                         cpus=cpu_gen, log_path=os.path.join(logdir, "mock.log"))
    variants = []
    for client in ("aiohttp", "raw") if stream else ("aiohttp", "httpx", "raw"):
        variants.append(("uvicorn", "raw", client))
        variants.append(("uvicorn", "fastapi", client))
        if stream:
            variants.append(("uvicorn", "raw+work", client))
    if granian and not stream:
        for client in ("aiohttp", "raw"):
            variants.append(("granian", "raw", client))
            variants.append(("granian", "rsgi", client))
        variants.append(("granian", "fastapi", "aiohttp"))
    results: dict[tuple, list] = {v: [] for v in variants}
    direct: list = []
    try:
        loadgen.wait_ready(f"http://127.0.0.1:{mport}/health", mock)
        for rnd in range(rounds):
            direct.append(load(f"http://127.0.0.1:{mport}{PATH}"))
            k = rnd % len(variants)  # rotate the order each round against drift
            for v in variants[k:] + variants[:k]:
                server, fw, client = v
                port = loadgen.free_port()
                env = {"HP_FRAMEWORK": fw.split("+")[0], "HP_CLIENT": client,
                       "HP_STREAM_WORK": "1" if fw.endswith("+work") else "0",
                       "HP_UPSTREAM": f"http://127.0.0.1:{mport}", "PYTHONPATH": here}
                if server == "uvicorn":
                    cmd = [venv_py, "-m", "uvicorn", "hotpath_study:app", "--host", "127.0.0.1",
                           "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                           "--no-access-log", "--log-level", "warning", "--app-dir", here]
                else:
                    cmd = [granian, "--interface", "rsgi" if fw == "rsgi" else "asgi",
                           "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                           "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                           "--working-dir", here, "hotpath_study:app"]
                p = loadgen.start(cmd, cpus=cpu_sut, env=env,
                                  log_path=os.path.join(logdir, f"{server}-{fw}-{client}.log"))
                try:
                    loadgen.wait_ready(f"http://127.0.0.1:{port}{PATH}", p, method="POST",
                                       body=body)
                    r = load(f"http://127.0.0.1:{port}{PATH}")
                    results[v].append(r)
                    print(f"round {rnd} {server:8s} {fw:8s} {client:8s} {r.rps:8.0f} req/s "
                          f"p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms "
                          f"ttft p50 {r.ttft_p50_ms:.2f} ms errors {r.errors}",
                          file=sys.stderr, flush=True)
                except Exception as e:  # noqa: BLE001 - record and go on
                    print(f"{v} failed: {e}", file=sys.stderr, flush=True)
                finally:
                    loadgen.stop(p)
                time.sleep(0.3)
    finally:
        loadgen.stop(mock)

    base = [r for r in results[("uvicorn", "fastapi", "aiohttp")]]
    base_rps = statistics.median([r.rps for r in base]) if base else float("nan")
    lines = [
        f"| server | app | upstream client | {'stream ' if stream else ''}req/s c{concurrency} "
        f"(median of {rounds}) "
        f"| per round | p50 ms | p99 ms | errors | × FastAPI+aiohttp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    d_rps = statistics.median([r.rps for r in direct]) if direct else float("nan")
    lines.append(f"| (direct to mock) | — | — | {d_rps:,.0f} | "
                 + " / ".join(f"{r.rps:,.0f}" for r in direct) + " | "
                 + f"{statistics.median([r.p50_ms for r in direct]):.2f} | "
                 + f"{statistics.median([r.p99_ms for r in direct]):.2f} | "
                 + f"{sum(r.errors for r in direct)} | — |")
    order = sorted(variants, key=lambda v: -statistics.median([r.rps for r in results[v]] or [0]))
    for v in order:
        rs = results[v]
        if not rs:
            lines.append(f"| {v[0]} | {v[1]} | {v[2]} | failed | | | | | |")
            continue
        med = statistics.median([r.rps for r in rs])
        lines.append(
            f"| {v[0]} | {v[1]} | {v[2]} | {med:,.0f} | "
            + " / ".join(f"{r.rps:,.0f}" for r in rs) + " | "
            + f"{statistics.median([r.p50_ms for r in rs]):.2f} | "
            + f"{statistics.median([r.p99_ms for r in rs]):.2f} | {sum(r.errors for r in rs)} | "
            + f"{med / base_rps:.2f} |")
    table = "\n".join(lines)
    if out:
        with open(out + ".tmp", "w") as f:
            f.write(table + "\n")
        os.replace(out + ".tmp", out)
    return table


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="store_true", help="run the study")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--granian", default="/tmp/granian-venv/bin/granian")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--stream", action="store_true", help="study the streaming relay instead")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if not a.run:
        ap.print_help()
        return
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # the finally blocks stop every child
    signal.signal(signal.SIGINT, signal.default_int_handler)
    granian = a.granian if a.granian and os.path.exists(a.granian) else None
    print(run_study(a.duration, a.rounds, a.out, granian, not a.no_pin, a.concurrency, a.stream))


if __name__ == "__main__":
    main()
