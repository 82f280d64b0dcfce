"""OpenAI's Files API, for fine-tuning files (thin router; storage in gateway.store.files).

POST   /v1/files                 multipart {file, purpose} -> ``OpenAIFile``
GET    /v1/files                 ?purpose, after, limit (1-100, default 100; OpenAI allows 10,000), order
GET    /v1/files/{file_id}       -> ``OpenAIFile``
GET    /v1/files/{file_id}/content   the bytes as uploaded
DELETE /v1/files/{file_id}       -> ``DeleteFileResponse``

An upload is parsed by Starlette's form parser (``python-multipart``), which streams the file part
into a temporary file (on disk past 1 MiB), then copied in chunks to ``$TUNELOOP_HOME/files``: it
never sits whole in memory. A body over ``TUNELOOP_MAX_UPLOAD_BYTES`` (512 MiB, OpenAI's limit for
a file) is a 413, from its ``content-length`` or once that many bytes have come; so is an upload that
would take its project past ``TUNELOOP_FILES_QUOTA_BYTES`` (100 GiB) stored in all.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from gateway.api.fine_tuning_wire import file_object
from gateway.api.paging import page_limit
from gateway.errors import BodyTooLarge, InvalidRequest, NotFound
from gateway.store.files import PURPOSES, FileStore, delete_file, store_file

router = APIRouter(tags=["files"])


def _engine(request: Request) -> Any:
    return request.app.state.log.engine


def _home(request: Request) -> Path:
    return Path(request.app.state.settings.resolved_home()).resolve()


def _too_large(cap: int) -> BodyTooLarge:
    return BodyTooLarge(f"The upload is larger than this gateway's limit of {cap} bytes (TUNELOOP_MAX_UPLOAD_BYTES).",
                        param="file")


def _capped(receive: Receive, cap: int) -> Receive:
    """``receive``, raising 413 once more than ``cap`` body bytes have come."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > cap:
            raise _too_large(cap)
        return message
    return wrapped


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
    cap = request.app.state.settings.max_upload_bytes
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Expected a multipart/form-data body with 'file' and 'purpose'.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(cap)
    try:
        form = await Request(request.scope, _capped(request.receive, cap)).form(max_files=1, max_fields=8)
    except MultiPartException as exc:
        raise InvalidRequest(f"Could not parse the multipart body: {exc.message}") from None
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str):
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        if purpose.strip() not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
        row = await asyncio.to_thread(store_file, _engine(request), _home(request), upload.filename or "upload.jsonl",
                                      upload.file, purpose.strip(), getattr(request.state, "project", None))
    finally:
        await form.close()
    quota = request.app.state.settings.files_quota_bytes
    if await asyncio.to_thread(FileStore(_engine(request)).usage, row["project"]) > quota:
        await asyncio.to_thread(delete_file, _engine(request), row["id"])
        raise BodyTooLarge(f"This upload would take the project past its storage quota of {quota} bytes "
                           "(TUNELOOP_FILES_QUOTA_BYTES): delete files it no longer needs.", param="file")
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
async def file_content(file_id: str, request: Request) -> FileResponse:
    row = await asyncio.to_thread(FileStore(_engine(request)).get, file_id, _project(request))
    if row is None or not Path(row["path"]).is_file():
        raise _not_found(file_id)
    return FileResponse(row["path"], media_type="application/octet-stream")  # streamed from disk


@router.delete("/v1/files/{file_id}")
async def remove_file(file_id: str, request: Request) -> dict[str, Any]:
    if await asyncio.to_thread(FileStore(_engine(request)).get, file_id, _project(request)) is None:
        raise _not_found(file_id)
    row = await asyncio.to_thread(delete_file, _engine(request), file_id)
    if row is None:
        raise _not_found(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
