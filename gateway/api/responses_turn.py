"""One ``POST /v1/responses`` as both ways of serving it see it (translated onto chat completions,
``gateway.api.responses``, or passed through, ``gateway.api.responses_native``), and the stored
conversation it reads and writes (``gateway.store.responses``, in a thread).

The stored row links the response to the chat completion it is logged as (``completion_id``: the
request's ``x-request-id``), whichever way it was served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from gateway.auth import Principal, project_of
from gateway.errors import GatewayError
from gateway.store.responses import ResponseStore

logger = logging.getLogger("tuneloop.responses")


@dataclass
class Turn:
    """One POST /v1/responses: its id, the request, its own input items, who asked, and the whole
    conversation as chat messages (what the log's prompt is)."""

    id: str
    body: dict[str, Any]
    created_at: int
    items: list[dict[str, Any]]
    principal: Principal
    messages: list[dict[str, Any]]


async def history(engine: sa.Engine, previous: str | None, principal: Principal) -> list[dict[str, Any]]:
    """The items of the conversation ``previous`` ends (none without one; same project only)."""
    if previous is None:
        return []
    try:
        return await asyncio.to_thread(ResponseStore(engine).context, previous, project_of(principal))
    except GatewayError:
        raise
    except Exception as exc:
        logger.exception("reading the conversation of %s failed", previous)
        raise GatewayError("The stored conversation could not be read; try again.", status_code=503) from exc


async def keep(engine: sa.Engine, turn: Turn, response: dict[str, Any], completion_id: str | None) -> dict[str, Any]:
    """Store the response (unless ``store: false``); the response as the client gets it (``store: false``
    when the write failed)."""
    if turn.body.get("store") is False:
        return response
    row = {"id": turn.id, "created_at": time.time(), "project": turn.principal.project,
           "completion_id": completion_id, "previous_response_id": turn.body.get("previous_response_id"),
           "response": response, "input_items": turn.items}
    try:
        await asyncio.to_thread(ResponseStore(engine).save, row)
    except Exception:
        logger.exception("storing response %s failed; it is returned with store: false", turn.id)
        return {**response, "store": False}
    return response
