"""Feedback on a completion: validation and the wire shape.

``POST /v1/feedback`` body (JSON object):
- ``completion_id`` (required): the gateway's completion id (``chatcmpl-...``).
- ``rating``: a number. By default on the *signed* scale, a float in [-1, 1]
  (-1 thumbs down, 0 neutral, +1 thumbs up). Send ``"rating_scale": "stars"`` to
  give 1..5 stars instead; it is stored as sent (``rating_raw``) and normalised to
  [-1, 1] as ``(stars - 3) / 2``, so datasets compare every rating on one scale.
- ``correction``: the ideal assistant reply, ``{"role": "assistant", "content": ...}``
  or a plain string (taken as that message's content).
- ``comment``: free text. ``tags``: a list of strings. ``metadata``: string pairs.
At least one of rating / correction / comment / tags. A completion may collect many;
for each kind, the newest counts (see ``summary``).

Caps (a 400 naming the field beyond them): ``comment`` at most ``MAX_COMMENT`` characters,
a correction's strings at most ``MAX_CORRECTION`` characters in all, at most ``MAX_TAGS``
tags of at most ``MAX_TAG`` characters each (``tags[i]`` names the one too long).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import sqlalchemy as sa

from gateway.errors import InvalidRequest
from gateway.store.schema import feedback as fb

KINDS = ("rating", "correction", "comment", "tags")
_FIELDS = {"completion_id", "rating", "rating_scale", "correction", "comment", "tags", "metadata"}
MAX_COMMENT = 8_192
MAX_CORRECTION = 65_536
MAX_TAGS, MAX_TAG = 32, 64


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest("'rating' must be a number.", param="rating")
    return float(value)


def _rating(body: dict[str, Any]) -> dict[str, Any]:
    scale = body.get("rating_scale") or "signed"
    if scale not in ("signed", "stars"):
        raise InvalidRequest("'rating_scale' must be 'signed' or 'stars'.", param="rating_scale")
    if body.get("rating") is None:
        return {}
    raw = _number(body["rating"])
    lo, hi = (-1.0, 1.0) if scale == "signed" else (1.0, 5.0)
    if not lo <= raw <= hi:
        raise InvalidRequest(f"'rating' on the {scale} scale must be in [{lo:g}, {hi:g}].",
                             param="rating")
    norm = raw if scale == "signed" else (raw - 3.0) / 2.0
    return {"rating": norm, "rating_raw": raw, "rating_scale": scale}


def _correction(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"role": "assistant", "content": value}
    if not isinstance(value, dict) or value.get("role", "assistant") != "assistant":
        raise InvalidRequest("'correction' must be a string or an assistant message.",
                             param="correction")
    calls = _tool_calls(value["tool_calls"]) if value.get("tool_calls") is not None else None
    content = value.get("content")
    if not (isinstance(content, str) or (isinstance(content, list) and content)) \
            and not value.get("tool_calls"):
        raise InvalidRequest("'correction' needs 'content' (or 'tool_calls').",
                             param="correction.content")
    if _chars([v for k, v in value.items() if k != "role"]) > MAX_CORRECTION:
        raise InvalidRequest(f"'correction' is too long: at most {MAX_CORRECTION} characters in all.",
                             param="correction")
    return {**value, "role": "assistant", **({"tool_calls": calls} if calls else {})}


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    """A corrected reply's tool calls in OpenAI's shape; ids made if missing.  ``arguments`` is a string, as in
    OpenAI's messages (a dataset build drops a line whose arguments are not a JSON object)."""
    if not isinstance(calls, list) or not 1 <= len(calls) <= 128:
        raise InvalidRequest("'correction.tool_calls' must be a list of 1 to 128 tool calls.",
                             param="correction.tool_calls")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        args = fn.get("arguments") if isinstance(fn, dict) else None
        ok = isinstance(name, str) and bool(name) and isinstance(args, str)
        if not ok or call.get("type", "function") != "function":
            raise InvalidRequest("each correction tool call needs type 'function', function.name and "
                                 "function.arguments (a string: a JSON object's text)",
                                 param=f"correction.tool_calls.{i}")
        out.append({"id": str(call.get("id") or "call_" + secrets.token_hex(12)), "type": "function",
                    "function": {"name": name, "arguments": args}})
    return out


def _chars(value: Any) -> int:
    """Characters in every string of a JSON value (keys of nested objects too); other scalars count 8."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, dict):
            total += sum(len(str(k)) for k in v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        else:
            total += 8
    return total


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise InvalidRequest(f"'tags' must be a list of at most {MAX_TAGS} strings.", param="tags")
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG:
            raise InvalidRequest(f"'tags[{i}]' must be a non-empty string of at most {MAX_TAG} characters.",
                                 param=f"tags[{i}]")
    return value


def validate_metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    """OpenAI's ``Metadata``: at most 16 pairs, keys ≤ 64 chars, string values ≤ 512."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()):
        raise InvalidRequest(f"'{param}' must be an object of at most 16 string pairs "
                             "(keys ≤ 64 characters, values ≤ 512).", param=param)
    return value


def parse_feedback(body: Any) -> dict[str, Any]:
    """A validated feedback row (without ``project``), or InvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}",
                             param=unknown[0])
    cid = body.get("completion_id")
    if not isinstance(cid, str) or not cid:
        raise InvalidRequest("Missing required parameter: 'completion_id'.", param="completion_id")
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise InvalidRequest("'comment' must be a string.", param="comment")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise InvalidRequest(f"'comment' is too long: at most {MAX_COMMENT} characters.", param="comment")
    row = {
        "id": "fb-" + secrets.token_hex(12),
        "completion_id": cid,
        "created": time.time(),
        "rating": None, "rating_raw": None, "rating_scale": None,
        **_rating(body),
        "correction": _correction(body.get("correction")),
        "comment": comment,
        "tags": _tags(body.get("tags")),
        "metadata": validate_metadata(body.get("metadata")),
    }
    if all(row[k] is None for k in KINDS):
        raise InvalidRequest("Give at least one of 'rating', 'correction', 'comment' or 'tags'.")
    return row


def feedback_object(row: dict[str, Any]) -> dict[str, Any]:
    out = {"id": row["id"], "object": "feedback", "completion_id": row["completion_id"],
           "created": int(row["created"])}
    for key in ("rating", "rating_raw", "rating_scale", "correction", "comment", "tags",
                "metadata"):
        out[key] = row.get(key)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Newest value of each kind (``rows`` newest first), with the id it came from."""
    out: dict[str, Any] = {"count": len(rows)}
    for kind in KINDS:
        newest = next((r for r in rows if r.get(kind) is not None), None)
        out[kind] = None if newest is None else newest[kind]
        out[f"{kind}_id"] = None if newest is None else newest["id"]
    return out


# ---- the paginated list (GET /v1/chat/completions/{id}/feedback) ----

def _set(column: Any) -> Any:
    """``column`` holds a value (JSON columns store an absent value as JSON null)."""
    if isinstance(column.type, (sa.Float, sa.Text, sa.String)):
        return column.is_not(None)
    return sa.and_(column.is_not(None), sa.cast(column, sa.Text) != "null")


def _newest(conn: sa.Connection, completion_id: str) -> dict[str, Any]:
    """``summary`` over every feedback row of a completion, without reading them all."""
    mine = fb.c.completion_id == completion_id
    out: dict[str, Any] = {"count": conn.execute(sa.select(sa.func.count()).where(mine)).scalar_one()}
    for kind in KINDS:
        row = conn.execute(sa.select(fb.c[kind], fb.c.id).where(mine, _set(fb.c[kind]))
                           .order_by(fb.c.created.desc(), fb.c.id.desc()).limit(1)).first()
        out[kind] = None if row is None else row[0]
        out[f"{kind}_id"] = None if row is None else row[1]
    return out


def page(engine: sa.Engine, completion_id: str, project: str | None, *, after: str | None, limit: int,
         order: str) -> tuple[list[dict[str, Any]], bool, dict[str, Any]] | None:
    """One page of a completion's feedback (``order`` by creation), whether more follow, and the
    summary of all of it; None if the completion is unknown (to this project)."""
    from gateway.store.interactions import _exists

    desc = order == "desc"
    mine = fb.c.completion_id == completion_id
    q = sa.select(fb).where(mine)
    with engine.connect() as conn:
        if not _exists(conn, completion_id, project):
            return None
        if after is not None:
            cursor = conn.execute(sa.select(fb.c.created, fb.c.id).where(mine, fb.c.id == after)).first()
            if cursor is None:
                raise InvalidRequest(f"No feedback with id '{after}' on this completion.", param="after")
            created, fid = cursor
            past = (sa.or_(fb.c.created < created, sa.and_(fb.c.created == created, fb.c.id < fid)) if desc
                    else sa.or_(fb.c.created > created, sa.and_(fb.c.created == created, fb.c.id > fid)))
            q = q.where(past)
        keys = (fb.c.created.desc(), fb.c.id.desc()) if desc else (fb.c.created, fb.c.id)
        rows = [dict(r) for r in conn.execute(q.order_by(*keys).limit(limit + 1)).mappings()]
        return rows[:limit], len(rows) > limit, _newest(conn, completion_id)
