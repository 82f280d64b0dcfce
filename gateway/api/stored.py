"""Stored chat completions, as OpenAI defines them (thin router; logic in gateway.store.interactions).

GET    /v1/chat/completions                          list (model, metadata[k]=v, after,
                                                     limit 1..100 (20), order asc|desc (asc))
GET    /v1/chat/completions/{completion_id}          one completion
POST   /v1/chat/completions/{completion_id}          {metadata} only: replace its metadata
DELETE /v1/chat/completions/{completion_id}          delete it (and its feedback)
GET    /v1/chat/completions/{completion_id}/messages its input messages (after, limit, order)

Every read first waits on ``LogService.sync()`` so a completion created just before is
visible (read-your-writes). Listed: logged primary records that returned 200; which
requests are logged at all is the gateway's per-model log policy. The tenancy filter
is ``request.state.project`` when auth has set it (None = every project).
``model`` matches the model name the client sent (the alias). An empty
page has ``first_id``/``last_id`` null. An unknown ``after`` is a 400.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from gateway.api.openapi import METADATA_SCHEMA, json_body
from gateway.api.paging import check_limit, list_page
from gateway.asgi import parse_json, read_body
from gateway.errors import InvalidRequest, NotFound
from gateway.log.service import LogService
from gateway.store.audit import actor_of
from gateway.store.feedback import validate_metadata
from gateway.store.forget import erase_completion

router = APIRouter(prefix="/v1/chat/completions", tags=["stored completions"])
MAX_UPDATE_BODY = 64 * 1024  # 16 metadata pairs fit many times over

def _log(request: Request) -> LogService:
    return request.app.state.log


def _project(request: Request) -> str | None:
    return getattr(request.state, "project", None)


def _not_found(completion_id: str) -> NotFound:
    return NotFound(f"No chat completion found with id '{completion_id}'.", param="completion_id")


def _page(request: Request) -> tuple[str | None, int, str]:
    q = request.query_params
    limit = check_limit(q.get("limit"), 20)
    order = q.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    return q.get("after"), limit, order


def _metadata_filter(request: Request) -> dict[str, str]:
    """The SDK sends metadata as a deep object: ``metadata[key]=value``."""
    out = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            out[key[len("metadata["):-1]] = value
    return out


@router.get("")
async def list_completions(request: Request) -> dict[str, Any]:
    after, limit, order = _page(request)
    log = _log(request)
    await log.sync()
    data, has_more = await asyncio.to_thread(
        log.store.list, model=request.query_params.get("model"),
        metadata=_metadata_filter(request), after=after, limit=limit, order=order,
        project=_project(request))
    return list_page(data, has_more)


@router.get("/{completion_id}")
async def get_completion(completion_id: str, request: Request) -> dict[str, Any]:
    log = _log(request)
    await log.sync()
    found = await asyncio.to_thread(log.store.get, completion_id, _project(request))
    if found is None:
        raise _not_found(completion_id)
    return found


UPDATE_BODY = json_body({"type": "object", "required": ["metadata"], "additionalProperties": False,
                         "properties": {"metadata": METADATA_SCHEMA}})


@router.post("/{completion_id}", openapi_extra=UPDATE_BODY)
async def update_completion(completion_id: str, request: Request) -> dict[str, Any]:
    body = parse_json(await read_body(request.scope, request.receive, MAX_UPDATE_BODY) or b"null")
    if not isinstance(body, dict) or "metadata" not in body:
        raise InvalidRequest("Missing required parameter: 'metadata'.", param="metadata")
    extra = sorted(set(body) - {"metadata"})
    if extra:
        raise InvalidRequest(f"Only 'metadata' can be updated, not '{extra[0]}'.", param=extra[0])
    metadata = validate_metadata(body["metadata"])
    log = _log(request)
    await log.sync()
    found = await asyncio.to_thread(log.store.update_metadata, completion_id, metadata,
                                    _project(request))
    if found is None:
        raise _not_found(completion_id)
    return found


@router.delete("/{completion_id}")
async def delete_completion(completion_id: str, request: Request) -> dict[str, Any]:
    """With its feedback; datasets built from it are marked stale; recorded in the audit trail."""
    log = _log(request)
    await log.sync()
    erased = await asyncio.to_thread(erase_completion, log.engine, completion_id,
                                     actor_of(getattr(request.state, "principal", None)), _project(request))
    if erased is None:
        raise _not_found(completion_id)
    return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}


@router.get("/{completion_id}/messages")
async def list_messages(completion_id: str, request: Request) -> dict[str, Any]:
    after, limit, order = _page(request)
    log = _log(request)
    await log.sync()
    page = await asyncio.to_thread(log.store.messages, completion_id, after=after, limit=limit,
                                   order=order, project=_project(request))
    if page is None:
        raise _not_found(completion_id)
    return list_page(*page)
