"""What the pages show, made from the log's rows: the traffic filter from the query string, the
conversation as bubbles, and the numbers as people read them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from gateway.errors import InvalidRequest
from gateway.store.traffic import TrafficFilter

FILTERS = ("model", "adapter", "arm", "status", "rating", "corrected", "since", "until", "meta", "q")
RATINGS = {"up": "rated up", "down": "rated down", "rated": "rated", "unrated": "not rated"}


def traffic_filter(query: dict[str, str], project: str | None) -> TrafficFilter:
    """The traffic page's filters (``project``: the viewer's tenancy filter, which wins over the query's)."""
    def text(name: str) -> str | None:
        return (query.get(name) or "").strip() or None

    status = text("status")
    if status not in (None, "ok", "error") and not (status or "").isdigit():
        raise InvalidRequest("'status' is ok, error or an HTTP status.", param="status")
    rating = text("rating")
    if rating is not None and rating not in RATINGS:
        raise InvalidRequest(f"'rating' is one of {', '.join(RATINGS)}.", param="rating")
    corrected = {"yes": True, "no": False}.get(text("corrected") or "")
    return TrafficFilter(project=project, model=text("model"), adapter=text("adapter"), arm=text("arm"),
                         status=status, rating=rating, corrected=corrected, since=_when(text("since"), "since"),
                         until=_when(text("until"), "until"), text=text("q"), metadata=_pairs(text("meta")))


def _pairs(value: str | None) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs, comma-separated (the request's metadata: all of them must match)."""
    pairs = []
    for part in (value or "").split(","):
        key, eq, val = part.partition("=")
        if not part.strip():
            continue
        if not eq or not key.strip():
            raise InvalidRequest("'meta' is key=value (several: key=value, key2=value2).", param="meta")
        pairs.append((key.strip(), val.strip()))
    return tuple(pairs)


def _when(value: str | None, name: str) -> float | None:
    """An ISO date or date-time (a browser's ``datetime-local``), read as UTC, in unix seconds."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a date (YYYY-MM-DD) or a date and time.", param=name) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return "$0" if value == 0 else f"${value:.6f}".rstrip("0").rstrip(".")


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def tokens(row: dict[str, Any]) -> str:
    prompt, completion = row.get("prompt_tokens"), row.get("completion_tokens")
    if prompt is None and completion is None:
        return "—"
    return f"{prompt or 0} → {completion or 0}"


def rating(value: float | None) -> str:
    if value is None:
        return ""
    return "▲ up" if value > 0 else "▼ down" if value < 0 else "neutral"


def _text(content: Any) -> str:
    """A message's content as text: parts joined, what is not text named in brackets."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "\n".join(p.get("text") or p.get("refusal") or f"[{p.get('type', 'part')}]"
                         if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content, ensure_ascii=False)


def _calls(message: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for call in message.get("tool_calls") or []:
        call = call if isinstance(call, dict) else {}
        raw = call.get("function")
        fn: dict[str, Any] = raw if isinstance(raw, dict) else {}
        out.append({"id": str(call.get("id") or ""), "name": str(fn.get("name") or "?"),
                    "arguments": str(fn.get("arguments") or "")})
    return out


def bubble(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {"role": "user", "text": _text(message), "calls": [], "about": ""}
    about = message.get("tool_call_id") or message.get("name") or ""
    return {"role": str(message.get("role") or "user"), "text": _text(message.get("content")),
            "calls": _calls(message), "about": str(about), "refusal": message.get("refusal") or ""}


def conversation(request: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The request's messages (a text completion's prompt: one user bubble)."""
    request = request or {}
    if "messages" in request:
        return [bubble(m) for m in request.get("messages") or []]
    prompt = request.get("prompt")
    prompts = prompt if isinstance(prompt, list) else [prompt]
    return [bubble({"role": "prompt", "content": p if isinstance(p, str) else json.dumps(p)}) for p in prompts]


def replies(response: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One bubble per choice of the reply."""
    out = []
    for choice in (response or {}).get("choices") or []:
        message = choice.get("message")
        out.append(bubble(message) if isinstance(message, dict)
                   else bubble({"role": "assistant", "content": choice.get("text")}))
    return out


def request_options(request: dict[str, Any] | None) -> str:
    """The request less its conversation (sampling, tools, response format), as indented JSON."""
    rest = {k: v for k, v in (request or {}).items() if k not in ("messages", "prompt")}
    return json.dumps(rest, indent=2, ensure_ascii=False) if rest else ""


def correction_text(correction: Any) -> str:
    return _text(correction.get("content")) if isinstance(correction, dict) else _text(correction)


def tags_text(tags: Any) -> str:
    return ", ".join(tags) if isinstance(tags, list) else ""
