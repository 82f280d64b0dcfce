"""Stored responses, as OpenAI's Responses API defines them (thin router; logic in gateway.store.responses).

GET    /v1/responses/{response_id}              the Response object
DELETE /v1/responses/{response_id}              -> {id, object: "response", deleted: true}
GET    /v1/responses/{response_id}/input_items  its input items (after, limit 1..100 (20),
                                                order asc|desc (desc, as OpenAI's))

Scoped to the caller's project (``request.state.project``; None for admins): another project's
id is a 404, as an unknown one. Deleting a response also erases the chat completion it was served
as (its interaction and feedback, as ``DELETE /v1/chat/completions/{id}``: datasets built from it
are marked stale, the audit trail records it). ``include`` values cannot be produced here (400);
replaying a stored response as a stream (``stream=true``) is not supported (400).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from gateway.api.paging import check_limit, list_page
from gateway.errors import InvalidRequest
from gateway.store.audit import actor_of
from gateway.store.forget import erase_completion
from gateway.store.responses import ResponseStore, not_found

router = APIRouter(prefix="/v1/responses", tags=["responses"])


def _store(request: Request) -> ResponseStore:
    return ResponseStore(request.app.state.log.engine)


def _project(request: Request) -> str | None:
    return getattr(request.state, "project", None)


def _no_include(request: Request) -> None:
    include = [v for k, v in request.query_params.multi_items() if k in ("include", "include[]") and v]
    if include:
        raise InvalidRequest(f"Unsupported 'include' values: {include[:4]}; none of them can be produced here.",
                             param="include")


@router.get("/{response_id}")
async def get_response(response_id: str, request: Request) -> dict[str, Any]:
    _no_include(request)
    if request.query_params.get("stream", "false").lower() not in ("false", "0", ""):
        raise InvalidRequest("Replaying a stored response as a stream is not supported.", param="stream")
    found = await asyncio.to_thread(_store(request).get, response_id, _project(request))
    if found is None:
        raise not_found(response_id)
    return found


@router.delete("/{response_id}")
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    project = _project(request)
    existed, completion_id = await asyncio.to_thread(_store(request).completion_of, response_id, project)
    if not existed:
        raise not_found(response_id)
    if completion_id is not None:  # one transaction erases the completion, its feedback and this response
        log = request.app.state.log
        await log.sync()  # the interaction may still be on its way to the database
        await asyncio.to_thread(erase_completion, log.engine, completion_id,
                                actor_of(getattr(request.state, "principal", None)), project)
    await asyncio.to_thread(_store(request).delete, response_id, project)  # not logged (log: none)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request) -> dict[str, Any]:
    _no_include(request)
    q = request.query_params
    limit = check_limit(q.get("limit"), 20)
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    page = await asyncio.to_thread(_store(request).input_items, response_id, _project(request),
                                   after=q.get("after"), limit=limit, order=order)
    if page is None:
        raise not_found(response_id)
    data, has_more = page
    return list_page(data, has_more)
