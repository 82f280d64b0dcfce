"""Stored responses, as OpenAI's Responses API defines them (thin router; logic in gateway.store.responses).

GET    /v1/responses/{response_id}              the Response object
DELETE /v1/responses/{response_id}              -> {id, object: "response", deleted: true}
GET    /v1/responses/{response_id}/input_items  its input items (after, limit 1..100 (20),
                                                order asc|desc (desc, as OpenAI's))

Scoped to the caller's project (``request.state.project``; None for admins): another project's
id is a 404, as an unknown one. A response is stored through the interaction log, off the request
path: an id not found is looked up again once the log has caught up (``responses_turn.find``: a
retrieve right after the reply finds it), and is a 503 (retry), not a 404, while the log's database
is away. Deleting a response also erases the chat completion it was served
as (its interaction and feedback, as ``DELETE /v1/chat/completions/{id}``: datasets built from it
are marked stale, the audit trail records it). ``include`` values cannot be produced here (400);
replaying a stored response as a stream (``stream=true``) is not supported (400).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Request

from gateway.api.paging import check_limit, list_page
from gateway.api.responses_turn import find
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
    found = await find(request.app.state.log, response_id,
                       partial(_store(request).get, response_id, _project(request)))
    if found is None:
        raise not_found(response_id)
    return found


@router.delete("/{response_id}")
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    project, log = _project(request), request.app.state.log
    store = _store(request)

    def existing() -> tuple[str | None] | None:  # (the chat completion it was served as,) when there
        existed, completion_id = store.completion_of(response_id, project)
        return (completion_id,) if existed else None

    found = await find(log, response_id, existing)
    if found is None:
        raise not_found(response_id)
    completion_id = found[0]
    if completion_id is not None:  # one transaction erases the completion, its feedback and this response
        await log.sync()  # the interaction may still be on its way to the database
        await asyncio.to_thread(erase_completion, log.engine, completion_id,
                                actor_of(getattr(request.state, "principal", None)), project)
    await asyncio.to_thread(store.delete, response_id, project)  # not logged (log: none)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request) -> dict[str, Any]:
    _no_include(request)
    q = request.query_params
    limit = check_limit(q.get("limit"), 20)
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    page = await find(request.app.state.log, response_id,
                      partial(_store(request).input_items, response_id, _project(request), after=q.get("after"),
                              limit=limit, order=order))
    if page is None:
        raise not_found(response_id)
    data, has_more = page
    return list_page(data, has_more)
