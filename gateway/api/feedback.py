"""Feedback on completions (thin router; validation in gateway.log.feedback).

POST /v1/feedback                                     add one: {completion_id, rating?,
                                                      rating_scale?, correction?, comment?,
                                                      tags?, metadata?} -> the feedback object
GET  /v1/chat/completions/{completion_id}/feedback    every feedback on it, newest first, plus
                                                      ``summary``: the newest of each kind

Unknown completion -> 404, bad shape -> 400, both in OpenAI's error envelope. Feedback
is not on the hot path: it goes straight to the database, in a thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request

from gateway.api.openapi import METADATA_SCHEMA, json_body
from gateway.errors import InvalidRequest, NotFound
from gateway.log.feedback import feedback_object, parse_feedback, summary
from gateway.log.service import LogService

router = APIRouter(tags=["feedback"])


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
        "correction": {"anyOf": [{"type": "null"}, {"type": "string"}, {
            "type": "object", "required": ["content"],
            "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}}}]},
        "comment": {"type": ["string", "null"], "maxLength": 100_000},
        "tags": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 32, "items": {
            "type": "string", "minLength": 1, "maxLength": 64}}]},
        "metadata": METADATA_SCHEMA,
    },
    "anyOf": [{"required": [k], "properties": {k: {"not": {"type": "null"}}}}
              for k in ("rating", "correction", "comment", "tags")],
})


@router.post("/v1/feedback", openapi_extra=FEEDBACK_BODY)
async def add_feedback(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    row = parse_feedback(body)
    log = _log(request)
    await log.sync()  # the completion may have been created a moment ago
    saved = await asyncio.to_thread(log.store.add_feedback, row,
                                    getattr(request.state, "project", None))
    if saved is None:
        raise _not_found(row["completion_id"])
    return feedback_object(saved)


@router.get("/v1/chat/completions/{completion_id}/feedback")
async def list_feedback(completion_id: str, request: Request) -> dict[str, Any]:
    log = _log(request)
    await log.sync()
    rows = await asyncio.to_thread(log.store.list_feedback, completion_id,
                                   getattr(request.state, "project", None))
    if rows is None:
        raise _not_found(completion_id)
    data = [feedback_object(r) for r in rows]
    return {"object": "list", "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False, "summary": summary(rows)}
