"""Stored responses (``POST /v1/responses`` with ``store``, OpenAI's default): one row per response.

    store = ResponseStore(engine)
    store.save({"id": "resp_...", "project": ..., "completion_id": "chatcmpl-...", ...})  # scripts, tests
    store.get(response_id, project)              # the Response object, or None
    store.context(response_id, project)          # every item of the conversation up to it
    store.input_items(response_id, project, after=..., limit=..., order=...)
    store.delete(response_id, project)           # -> the row's completion_id (or None when absent)

``completion_id`` is the chat completion the response was served as (its interaction in the
log). ``input_items`` are this response's own input items, normalised (each with an ``id``);
``previous_response_id`` links a conversation, and ``context`` follows the links back to its
start. ``project`` scopes every read (``None``: any project, for admins). The table comes from
migration ``0006_responses``. The gateway does not ``save`` on the request path: its rows travel to the
log writer child as ``StoredResponse`` records (``gateway.api.responses_turn.keep``) and are inserted
there, in batches, by ``gateway.log.sink``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from gateway.errors import InvalidRequest, NotFound
from gateway.store.schema import JSONType, metadata

MAX_CHAIN = 10_000  # links followed back through previous_response_id

responses = sa.Table(
    "responses", metadata,
    sa.Column("id", sa.String(96), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("project", sa.String(128)),
    sa.Column("completion_id", sa.String(96)),
    sa.Column("previous_response_id", sa.String(96)),
    sa.Column("response", JSONType, nullable=False),
    sa.Column("input_items", JSONType, nullable=False),
    sa.Index("ix_responses_completion_id", "completion_id"),  # 0009: erasing a completion finds its responses
)
t = responses


def not_found(response_id: str, param: str = "response_id") -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param=param)


class ResponseStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def save(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.insert().values(**row))

    def _row(self, conn: sa.Connection, response_id: str, project: str | None) -> Any:
        q = sa.select(t).where(t.c.id == response_id)
        if project is not None:
            q = q.where(t.c.project == project)
        return conn.execute(q).first()

    def get(self, response_id: str, project: str | None) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = self._row(conn, response_id, project)
        return None if row is None else dict(row.response)

    def context(self, response_id: str, project: str | None) -> list[dict[str, Any]]:
        """The input and output items of ``response_id`` and of every response before it, oldest
        first (instructions are not carried over, as OpenAI's). A missing link is a 404."""
        turns: list[list[dict[str, Any]]] = []
        wanted: str | None = response_id
        with self.engine.connect() as conn:
            while wanted is not None:
                if len(turns) >= MAX_CHAIN:
                    raise InvalidRequest(f"The conversation is longer than {MAX_CHAIN} responses.",
                                         param="previous_response_id")
                row = self._row(conn, wanted, project)
                if row is None:
                    if wanted == response_id:
                        raise not_found(wanted, "previous_response_id")
                    raise NotFound(f"Response '{response_id}' continues response '{wanted}', which no longer "
                                   "exists.", param="previous_response_id")
                turns.append([*row.input_items, *row.response.get("output", [])])
                wanted = row.previous_response_id
        return [item for turn in reversed(turns) for item in turn]

    def input_items(self, response_id: str, project: str | None, *, after: str | None, limit: int,
                    order: str) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of the response's input items (``order`` asc: as given), None when no such response."""
        with self.engine.connect() as conn:
            row = self._row(conn, response_id, project)
        if row is None:
            return None
        items = list(row.input_items if order == "asc" else reversed(row.input_items))
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequest(f"No input item with id '{after}' in response '{response_id}'.",
                                     param="after")
            items = items[ids.index(after) + 1:]
        return items[:limit], len(items) > limit

    def completion_of(self, response_id: str, project: str | None) -> tuple[bool, str | None]:
        """(whether it exists, the chat completion it was served as)."""
        with self.engine.connect() as conn:
            row = self._row(conn, response_id, project)
        return (False, None) if row is None else (True, row.completion_id)

    def delete(self, response_id: str, project: str | None) -> bool:
        """Whether it was there (erasing its chat completion deletes it too: ``forget.erase_completion``)."""
        with self.engine.begin() as conn:
            q = t.delete().where(t.c.id == response_id)
            if project is not None:
                q = q.where(t.c.project == project)
            return bool(conn.execute(q).rowcount)
