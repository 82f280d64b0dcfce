"""OpenAI's Files API, for fine-tuning files (thin router; storage in gateway.store.files).

POST   /v1/files                 multipart {file, purpose} -> ``OpenAIFile``
GET    /v1/files                 ?purpose, after, limit (1-100, default 100; OpenAI allows 10,000), order
GET    /v1/files/{file_id}       -> ``OpenAIFile``
GET    /v1/files/{file_id}/content   the bytes as uploaded
DELETE /v1/files/{file_id}       -> ``DeleteFileResponse``

The multipart body is parsed with the standard library's ``email`` parser (a MIME
multipart is what it reads), so the gateway needs no ``python-multipart``.
"""

from __future__ import annotations

import asyncio
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.fine_tuning_wire import file_object
from gateway.api.paging import page_limit
from gateway.errors import InvalidRequest, NotFound
from gateway.store.files import PURPOSES, FileStore, delete_file, store_file

router = APIRouter(tags=["files"])


def _engine(request: Request) -> Any:
    return request.app.state.log.engine


def _home(request: Request) -> Path:
    return Path(request.app.state.settings.resolved_home()).resolve()


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field: (filename, bytes)}`` from a ``multipart/form-data`` body."""
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest("Expected a multipart/form-data body with 'file' and 'purpose'.")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise InvalidRequest("Could not parse the multipart body.")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _project(request: Request) -> str | None:
    """The caller's project (None for admins and with auth off: every project)."""
    return getattr(request.state, "project", None)


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id")


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": list(PURPOSES)}}}}}}}


@router.post("/v1/files", openapi_extra=UPLOAD_BODY)
async def create_file(request: Request) -> dict[str, Any]:
    fields = parse_multipart(request.headers.get("content-type", ""), await request.body())
    if "file" not in fields:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    if "purpose" not in fields:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
    filename, content = fields["file"]
    purpose = fields["purpose"][1].decode().strip()
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    row = await asyncio.to_thread(store_file, _engine(request), _home(request), filename or "upload.jsonl",
                                  content, purpose, getattr(request.state, "project", None))
    return file_object(row)


@router.get("/v1/files")
async def list_files(request: Request, limit: Annotated[int, page_limit(100)], purpose: str | None = None,
                     after: str | None = None, order: Literal["asc", "desc"] = "desc") -> dict[str, Any]:
    rows, more = await asyncio.to_thread(FileStore(_engine(request)).list, purpose, after, limit, order,
                                         _project(request))
    data = [file_object(r) for r in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else "",
            "last_id": data[-1]["id"] if data else "", "has_more": more}


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request) -> dict[str, Any]:
    row = await asyncio.to_thread(FileStore(_engine(request)).get, file_id, _project(request))
    if row is None:
        raise _not_found(file_id)
    return file_object(row)


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> Response:
    row = await asyncio.to_thread(FileStore(_engine(request)).get, file_id, _project(request))
    if row is None or not Path(row["path"]).is_file():
        raise _not_found(file_id)
    content = await asyncio.to_thread(Path(row["path"]).read_bytes)
    return Response(content, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def remove_file(file_id: str, request: Request) -> dict[str, Any]:
    if await asyncio.to_thread(FileStore(_engine(request)).get, file_id, _project(request)) is None:
        raise _not_found(file_id)
    row = await asyncio.to_thread(delete_file, _engine(request), file_id)
    if row is None:
        raise _not_found(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
