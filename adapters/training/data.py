"""Training files: read and check them line by line, then tokenize for SFT or DPO.

* :func:`read_jsonl` parses a JSONL file and checks each line with the dataset
  validator (``adapters.datasets.validate.check_line``), raising :class:`DataError`
  with the 1-based line number of the first bad line, so a job can fail with
  ``line 3: messages[1]: role 'bot' is not one of ...``.
* :func:`sft_example` renders a conversation with the tokenizer's chat template (a line with
  tools through the template the engine serves tools with) and
  builds labels that are ``-100`` everywhere but on assistant turns (``weight: 0``
  turns are masked too). A turn's tokens are found by rendering the conversation up to
  it with ``add_generation_prompt`` and up to its end: the difference is the reply plus
  its end-of-turn marker, which is what the model must learn to emit.
* :func:`dpo_example` renders the prompt once and each output after it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from adapters.datasets.validate import check_line

IGNORE = -100


class DataError(ValueError):
    """A training file is malformed; the message names the line."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_jsonl(path: Path, fmt: str) -> list[dict[str, Any]]:
    """All lines of ``path`` as dicts, each valid for ``fmt`` ("sft" | "dpo")."""
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DataError(f"line {n}: not valid JSON ({exc})", n) from exc
            problems = check_line(obj, fmt)
            if problems:
                raise DataError(f"line {n}: {'; '.join(problems[:3])}", n)
            rows.append(obj)
    if not rows:
        raise DataError("the file has no examples")
    return rows


def _content(msg: dict[str, Any]) -> str | None:
    """Message content as one string (content parts joined), or None."""
    content = msg.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def _text(msg: dict[str, Any]) -> str:
    """Message content as one string (the SmolLM2 template takes strings only)."""
    text = _content(msg) or ""
    if msg.get("tool_calls"):
        text += orjson.dumps(msg["tool_calls"]).decode()
    return text


def _plain(msgs: list[dict[str, Any]]) -> list[dict[str, str]]:
    role = {"developer": "system"}
    return [{"role": role.get(m["role"], m["role"]), "content": _text(m)} for m in msgs]


def _chat(tokenizer: Any, obj: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages as the template takes them, and its keyword arguments. A line with tools, tool calls
    or tool results goes through the template the engine serves tools with (``tool_template``: the
    model's own when it reads ``tools``, else the Hermes one), so an adapter learns the prompt and the
    call format it is served with; other lines (or a model without tool support) as plain text."""
    from adapters.engine.tools import tool_template

    msgs = obj["messages"]
    tooled = bool(obj.get("tools")) or any(m.get("tool_calls") or m["role"] == "tool" for m in msgs)
    template = tool_template(tokenizer) if tooled else None
    if template is None:
        return _plain(msgs), {}
    return [_structured(m) for m in msgs], {"tools": obj.get("tools") or None, "chat_template": template}


def _structured(msg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": {"developer": "system"}.get(msg["role"], msg["role"]), "content": _content(msg)}
    if msg.get("tool_calls"):
        out["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _args(c["function"].get("arguments"))}}
                             for c in msg["tool_calls"]]
    if msg.get("tool_call_id"):
        out["tool_call_id"] = msg["tool_call_id"]
    return out


def _args(arguments: Any) -> str:
    """A call's arguments as compact JSON text (as the engine's constrained decoder writes them)."""
    value = orjson.loads(arguments) if isinstance(arguments, str) else (arguments or {})
    return orjson.dumps(value).decode()


def _ids(tokenizer: Any, msgs: list[dict[str, Any]], gen: bool, **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen, return_dict=False,
                                        **kwargs)
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def sft_example(tokenizer: Any, obj: dict[str, Any], max_length: int) -> SFTExample:
    msgs = obj["messages"]
    chat, kwargs = _chat(tokenizer, obj)
    ids: list[int] = []
    labels: list[int] = []
    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        prefix = _ids(tokenizer, chat[:i], gen=True, **kwargs) if i else []
        full = _ids(tokenizer, chat[: i + 1], gen=False, **kwargs)
        # the template is prefix-stable: earlier turns render the same in longer renders
        ids_so_far = prefix[len(ids):]
        labels += [IGNORE] * len(ids_so_far)
        ids += ids_so_far
        reply = full[len(prefix):]
        labels += reply if msg.get("weight", 1) else [IGNORE] * len(reply)
        ids += reply
    return SFTExample(ids[:max_length], labels[:max_length])


@dataclass
class DPOExample:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def dpo_example(tokenizer: Any, obj: dict[str, Any], max_length: int) -> DPOExample:
    plain = _plain(obj["input"]["messages"])
    prompt = _ids(tokenizer, plain, gen=True)

    def reply(out: list[dict[str, Any]]) -> list[int]:
        return _ids(tokenizer, [*plain, *_plain(out)], gen=False)[len(prompt):]

    chosen, rejected = reply(obj["preferred_output"]), reply(obj["non_preferred_output"])
    # keep the replies whole; cut the prompt from the left if the pair is too long
    room = max(8, max_length - max(len(chosen), len(rejected)))
    return DPOExample(prompt[-room:], chosen[: max_length - 1], rejected[: max_length - 1])


def pad_sft(batch: list[SFTExample], pad_id: int) -> dict[str, Any]:
    import torch

    n = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for row, e in enumerate(batch):
        k = len(e.input_ids)
        ids[row, :k] = torch.tensor(e.input_ids)
        labels[row, :k] = torch.tensor(e.labels)
        mask[row, :k] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pad_dpo(batch: list[DPOExample], pad_id: int) -> dict[str, Any]:
    """Chosen rows first, then rejected rows, as one SFT-shaped batch (one forward pass)."""
    rows = [SFTExample(e.prompt + e.chosen, [IGNORE] * len(e.prompt) + e.chosen) for e in batch]
    rows += [SFTExample(e.prompt + e.rejected, [IGNORE] * len(e.prompt) + e.rejected) for e in batch]
    return pad_sft(rows, pad_id)
