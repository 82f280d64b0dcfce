"""One ``POST /v1/responses`` as both ways of serving it see it (translated onto chat completions,
``gateway.api.responses_translated``, or passed through, ``gateway.api.responses_native``), and the
stored conversation it reads and writes (``gateway.store.responses``).

The stored row is written off the request path: ``keep`` hands it to the interaction log as a
``StoredResponse`` (the same queue, pipe, spool and batches as the interaction records, so it
survives what they survive: a full queue, a dead writer, a database outage, a restart) before the
reply's last bytes. Reads that must see it (``find``, ``history``: a retrieve, a delete, the input
items, a ``previous_response_id`` right after the reply) look once, and when it is not there wait on
the log's read-your-writes barrier (``LogService.sync``) and look again; a barrier that times out
(the log's database slow or away) makes a miss a 503, not a 404. The stored row links the response to
the chat completion it is logged as (``completion_id``: the request's ``x-request-id``), whichever
way it was served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.auth import Principal, project_of
from gateway.errors import DatabaseUnavailable, GatewayError, NotFound
from gateway.log.record import StoredResponse
from gateway.store.responses import ResponseStore

logger = logging.getLogger("tuneloop.responses")
T = TypeVar("T")


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
    redact_pii: bool = False  # the alias scrubs PII from what is stored: the stored Response too


def catching_up(response_id: str) -> DatabaseUnavailable:
    return DatabaseUnavailable("The interaction log is catching up (its database is slow or away), so response "
                               f"'{response_id}' may not be stored yet; retry shortly.")


async def find(log: Any, response_id: str, read: Callable[[], T | None]) -> T | None:
    """``read()`` (in a thread) of a stored response; when it finds nothing, again once the log has
    written what it was given before (it may have been stored a moment ago). None when it is not there
    either; a 503 when the log could not catch up. ``log``: the ``LogService``."""
    found = await asyncio.to_thread(read)
    if found is not None:
        return found
    synced = await log.sync()
    found = await asyncio.to_thread(read)
    if found is None and not synced:
        raise catching_up(response_id)
    return found


async def history(log: Any, previous: str | None, principal: Principal) -> list[dict[str, Any]]:
    """The items of the conversation ``previous`` ends (none without one; same project only)."""
    if previous is None:
        return []
    store, project = ResponseStore(log.engine), project_of(principal)
    try:
        try:
            return await asyncio.to_thread(store.context, previous, project)
        except NotFound:  # a link may still be on its way to the database
            synced = await log.sync()
            try:
                return await asyncio.to_thread(store.context, previous, project)
            except NotFound:
                if not synced:
                    raise catching_up(previous) from None
                raise
    except GatewayError:
        raise
    except Exception as exc:
        logger.exception("reading the conversation of %s failed", previous)
        raise GatewayError("The stored conversation could not be read; try again.", status_code=503) from exc


def keep(log: Any, turn: Turn, response: dict[str, Any], completion_id: str | None) -> dict[str, Any]:
    """Store the response (unless ``store: false``): queued to the log writer, never waited for. The
    response as the client gets it (``store: false`` when it could be neither queued nor spooled).
    ``log``: anything with the ``LogService``'s ``submit``."""
    if turn.body.get("store") is False:
        return response
    row = StoredResponse(id=turn.id, created_at=time.time(), project=turn.principal.project,
                         completion_id=completion_id, previous_response_id=turn.body.get("previous_response_id"),
                         response=response, input_items=turn.items, redact_pii=turn.redact_pii)
    try:
        queued = log.submit(row)
    except Exception:
        logger.exception("queueing response %s failed", turn.id)
        queued = False
    if queued is False:
        logger.error("response %s could not be stored; it is returned with store: false", turn.id)
        return {**response, "store": False}
    return response
