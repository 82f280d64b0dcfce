"""The thinnest FastAPI + aiohttp pass-through: the floor for a Python gateway.

One route. Forwards the request body bytes to the upstream and returns its bytes; a
``"stream": true`` request is relayed chunk by chunk through a StreamingResponse. No
parsing, no routing, no logging, no metrics.

Run (the bench does this):
    PASSTHROUGH_UPSTREAM=http://127.0.0.1:18001 .venv/bin/uvicorn passthrough:app \
        --app-dir loadtests --host 127.0.0.1 --port 18002 --loop uvloop --http httptools \
        --workers 1 --no-access-log
"""

import os

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:18001").rstrip("/")
URL = UPSTREAM + "/v1/chat/completions"
HEADERS = {"content-type": "application/json"}

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    return _session


@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.body()
    if b'"stream":true' in body.replace(b" ", b""):
        resp = await session().post(URL, data=body, headers=HEADERS)

        async def relay():
            try:
                async for piece in resp.content.iter_any():
                    yield piece
            finally:
                resp.release()

        return StreamingResponse(relay(), status_code=resp.status,
                                 media_type=resp.headers.get("content-type"))
    async with session().post(URL, data=body, headers=HEADERS) as resp:
        data = await resp.read()
        return Response(data, status_code=resp.status,
                        media_type=resp.headers.get("content-type"))
