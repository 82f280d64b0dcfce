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
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from gateway.errors import InvalidRequest

KINDS = ("rating", "correction", "comment", "tags")
_FIELDS = {"completion_id", "rating", "rating_scale", "correction", "comment", "tags", "metadata"}
MAX_TEXT = 100_000


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
    content = value.get("content")
    if not (isinstance(content, str) or (isinstance(content, list) and content)) \
            and not value.get("tool_calls"):
        raise InvalidRequest("'correction' needs 'content' (or 'tool_calls').",
                             param="correction.content")
    return {**value, "role": "assistant"}


def _strings(value: Any, param: str, max_items: int, max_len: int) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > max_items or not all(
            isinstance(v, str) and 0 < len(v) <= max_len for v in value):
        raise InvalidRequest(f"'{param}' must be a list of at most {max_items} non-empty strings "
                             f"of at most {max_len} characters.", param=param)
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
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_TEXT):
        raise InvalidRequest("'comment' must be a string.", param="comment")
    row = {
        "id": "fb-" + secrets.token_hex(12),
        "completion_id": cid,
        "created": time.time(),
        "rating": None, "rating_raw": None, "rating_scale": None,
        **_rating(body),
        "correction": _correction(body.get("correction")),
        "comment": comment,
        "tags": _strings(body.get("tags"), "tags", 32, 64),
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
