"""Tool calls and structured replies, scored: the right function, arguments equal as JSON, a schema met.

An example with ``tools`` asks the arm with them; its reference is the tool calls of its last
assistant message (none: the right answer was text, so any call is wrong).

- ``tool_calls``: 1 when the reply's calls equal the reference's (same functions, arguments equal
  as JSON values, order ignored), else 0; it also counts as one of the example's task checks.
- ``tool_name``: 1 when the same functions are called (arguments aside).
- ``schema_valid`` (examples with ``response_format``): 1 when the reply parses as JSON and, for
  ``json_schema``, validates against the schema.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

Call = tuple[str, str]  # (function name, arguments as canonical JSON)


def canonical(arguments: Any) -> str:
    """Arguments (a JSON string as OpenAI sends them, or a value) as canonical JSON; unparsable: as is."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"))


def calls_of(message: dict[str, Any] | None) -> list[Call]:
    """An assistant message's tool calls (OpenAI's shape) as (name, canonical arguments)."""
    out = []
    for call in (message or {}).get("tool_calls") or ():
        fn = call.get("function") or {}
        out.append((str(fn.get("name")), canonical(fn.get("arguments", "{}"))))
    return out


def score_calls(expected: list[Call], got: list[Call]) -> tuple[float, float]:
    """(``tool_calls``, ``tool_name``): all calls right, and the right functions."""
    right = Counter(expected) == Counter(got)
    names = Counter(n for n, _ in expected) == Counter(n for n, _ in got)
    return float(right), float(names)


def schema_valid(response_format: dict[str, Any], reply: str) -> float:
    try:
        value = json.loads(reply)
    except ValueError:
        return 0.0
    if response_format.get("type") == "json_object":
        return float(isinstance(value, dict))
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        return 1.0
    import jsonschema  # type: ignore[import-untyped]

    return float(jsonschema.Draft202012Validator(schema).is_valid(value))
