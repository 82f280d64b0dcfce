"""Feedback on completions (thin router; validation in gateway.store.feedback).

POST /v1/feedback                                     add one: {completion_id, rating?,
                                                      rating_scale?, correction?, comment?,
                                                      tags?, metadata?} -> the feedback object
GET  /v1/chat/completions/{completion_id}/feedback    its feedback, a page at a time (after,
                                                      limit 1..100 (20), order desc|asc (desc:
                                                      newest first)), plus ``summary``: the
                                                      newest of each kind over all of it

Unknown completion -> 404, bad shape -> 400, a body over ``MAX_BODY`` -> 413, all in
OpenAI's error envelope. Caps on each field: gateway.store.feedback. A POST counts against
the key's rpm (gateway.api.deps). Feedback is not on the hot path: it goes straight to the
database, in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request

from gateway.api.openapi import METADATA_SCHEMA, json_body
from gateway.api.paging import list_page, page_limit
from gateway.asgi import parse_json, read_body
from gateway.errors import DatabaseUnavailable, NotFound
from gateway.log.service import LogService
from gateway.store.feedback import MAX_COMMENT, MAX_CORRECTION, MAX_TAG, MAX_TAGS, feedback_object, page, parse_feedback

router = APIRouter(tags=["feedback"])
MAX_BODY = 1024 * 1024  # far above what the field caps allow


def _log(request: Request) -> LogService:
    return request.app.state.log


def _not_found(completion_id: str) -> NotFound:
    return NotFound(f"No chat completion found with id '{completion_id}'.", param="completion_id")


_TEXT = {"type": "string", "minLength": 1}
FEEDBACK_BODY = json_body({
    "type": "object", "required": ["completion_id"], "additionalProperties": False,
    "properties": {
        "completion_id": _TEXT,
        "rating": {"type": ["number", "null"], "minimum": -1, "maximum": 1,
                   "description": "-1..1 (thumbs); with rating_scale 'stars', 1..5"},
        "rating_scale": {"enum": ["signed", None]},
        "correction": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": MAX_CORRECTION}, {
            "type": "object", "anyOf": [{"required": ["content"], "properties": {"content": {"type": "string"}}},
                                        {"required": ["tool_calls"]}],
            "properties": {"role": {"const": "assistant"},
                           "content": {"type": ["string", "null"], "maxLength": MAX_CORRECTION},
                           "tool_calls": {"type": "array", "minItems": 1, "maxItems": 128, "items": {
                               "type": "object", "required": ["function"],
                               "properties": {"id": {"type": "string"}, "type": {"const": "function"},
                                              "function": {"type": "object", "required": ["name", "arguments"],
                                                           "properties": {"name": {"type": "string", "minLength": 1},
                                                                          "arguments": {"type": "string"}}}}}}}}]},
        "comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT},
        "tags": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": MAX_TAGS, "items": {
            "type": "string", "minLength": 1, "maxLength": MAX_TAG}}]},
        "metadata": METADATA_SCHEMA,
    },
    "anyOf": [{"required": [k], "properties": {k: {"not": {"type": "null"}}}}
              for k in ("rating", "correction", "comment", "tags")],
})


@router.post("/v1/feedback", openapi_extra=FEEDBACK_BODY)
async def add_feedback(request: Request) -> dict[str, Any]:
    body = parse_json(await read_body(request.scope, request.receive, MAX_BODY) or b"null")
    return await save_feedback(_log(request), body, getattr(request.state, "project", None))


async def save_feedback(log: LogService, body: Any, project: str | None) -> dict[str, Any]:
    """Validate and store one piece of feedback (a parsed ``POST /v1/feedback`` body) on a completion of
    ``project`` (None: any); the feedback object, or the API's error. The console saves through it too."""
    row = parse_feedback(body)
    synced = await log.sync()  # the completion may have been created a moment ago
    saved = await asyncio.to_thread(log.store.add_feedback, row, project)
    if saved is None and not synced:  # it may be among the records not written yet: not a 404
        raise DatabaseUnavailable("The interaction log is catching up (its database is slow or away), so "
                                  f"completion '{row['completion_id']}' may not be stored yet; retry shortly.")
    if saved is None:
        raise _not_found(row["completion_id"])
    return feedback_object(saved)


@router.get("/v1/chat/completions/{completion_id}/feedback")
async def list_feedback(completion_id: str, request: Request, limit: Annotated[int, page_limit(20)],
                        after: str | None = None, order: Literal["asc", "desc"] = "desc") -> dict[str, Any]:
    log = _log(request)
    await log.sync()
    found = await asyncio.to_thread(page, log.engine, completion_id, getattr(request.state, "project", None),
                                    after=after, limit=limit, order=order)
    if found is None:
        raise _not_found(completion_id)
    rows, has_more, summary = found
    data = [feedback_object(r) for r in rows]
    return list_page(data, has_more, summary=summary)
