"""CLI filter strings → ``ExportFilters``.

Times: unix seconds (``1735689600``), ISO 8601 (``2025-01-01``, ``2025-01-01T12:00:00Z``;
naive means UTC) or a duration back from now (``30m``, ``12h``, ``7d``).
Metadata: ``key=value``, repeatable, all must match.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from gateway.log.export import ExportFilters

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | None, now: float | None = None) -> float | None:
    if value is None or value == "":
        return None
    value = value.strip()
    m = _AGO.match(value)
    if m:
        return (now if now is not None else time.time()) - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"cannot read time {value!r} (unix seconds, ISO 8601, or 7d/12h/30m)") \
            from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_metadata(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"metadata filter {pair!r} is not key=value")
        out[key] = value
    return out


def make_filters(*, model: str | None = None, adapter: str | None = None,
                 project: str | None = None, since: str | None = None,
                 until: str | None = None, metadata: list[str] | None = None,
                 min_rating: float | None = None, has_correction: bool = False,
                 status_ok: bool = True) -> ExportFilters:
    return ExportFilters(model=model, upstream_model=adapter, project=project,
                         since=parse_time(since), until=parse_time(until),
                         metadata=parse_metadata(metadata), min_rating=min_rating,
                         has_correction=has_correction, status_ok=status_ok)
