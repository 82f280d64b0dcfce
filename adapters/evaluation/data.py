"""Held-out examples: a prompt, a reference reply, and checks.

From a JSONL file in the SFT format (``{"messages": [..., {"role": "assistant", ...}]}``:
the last assistant message is the reference, the messages before it the prompt), with an
optional ``checks`` list per line; or from a dataset's validation split (``datasets.val_path``).
A line's ``tools`` and ``parallel_tool_calls`` (OpenAI's fine-tuning format), ``tool_choice`` and
``response_format`` are sent
with its prompt; when the last assistant message calls tools, those calls are the reference
(``calls.py`` scores them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.evaluation.calls import Call, calls_of


@dataclass
class Example:
    prompt: list[dict[str, Any]]
    reference: str | None
    checks: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reference_calls: list[Call] = field(default_factory=list)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def from_line(line: dict[str, Any]) -> Example:
    messages = list(line.get("messages") or [])
    reference, calls = None, []
    if messages and messages[-1].get("role") == "assistant":
        last = messages.pop()
        reference, calls = _text(last) or None, calls_of(last)
    if not messages:
        raise ValueError("an example needs at least one prompt message")
    return Example(messages, reference, list(line.get("checks") or []), line.get("tools") or None,
                   line.get("tool_choice"), line.get("parallel_tool_calls"), line.get("response_format"), calls)


def load_file(path: Path, limit: int | None = None) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if raw.strip():
                try:
                    out.append(from_line(json.loads(raw)))
                except (ValueError, AttributeError) as exc:
                    raise ValueError(f"{path}:{n}: {exc}") from exc
            if limit and len(out) >= limit:
                break
    return out


def load_dataset(engine: Any, dataset_id: str, limit: int | None = None) -> list[Example]:
    """The dataset's validation split (held out of its training file)."""
    from gateway.store.datasets import DatasetStore

    ds = DatasetStore(engine).get(dataset_id)
    if ds is None:
        raise ValueError(f"no dataset {dataset_id!r}")
    if not ds.get("val_path") or not ds.get("val_rows"):
        raise ValueError(f"dataset {dataset_id} has no validation split: build it with --val-fraction > 0")
    return load_file(Path(ds["val_path"]), limit)
