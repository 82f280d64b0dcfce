"""List pagination as OpenAI does it: ``limit`` between 1 and 100, anything else a 400.

    limit: Annotated[int, page_limit(20)]      # in a route's signature

The parameter is documented as an integer in [1, 100] but checked here rather than by
FastAPI, so every list answers the same 400 (``param: "limit"``), for 0, -1, 101 and for
values past 64 bits that a database would otherwise choke on.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Query

from gateway.errors import InvalidRequest

MAX_LIMIT = 100


def check_limit(raw: Any, default: int) -> int:
    """``raw`` (a query string value, an int or None) as a limit, or InvalidRequest."""
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise InvalidRequest(f"Invalid value for 'limit': {str(raw)[:64]!r} is not an integer.",
                             param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"Invalid 'limit': limit must be between 1 and {MAX_LIMIT}.", param="limit")
    return limit


def list_page(data: list[dict[str, Any]], has_more: bool, **extra: Any) -> dict[str, Any]:
    """OpenAI's list object: ``data`` with ``first_id``/``last_id`` (null on an empty page) and ``has_more``."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more, **extra}


def page_limit(default: int = 20) -> Any:
    """A dependency reading ``?limit=`` (default ``default``)."""

    def limit(limit: int = Query(default=default, description=f"1 to {MAX_LIMIT} (default {default})",
                                 json_schema_extra={"minimum": 1, "maximum": MAX_LIMIT})) -> int:
        return check_limit(limit, default)

    return Depends(limit)
