"""Prompt-completion lines, OpenAI's legacy fine-tuning format, from logged text completions.

    {"prompt": "...", "completion": "..."}

The builder reads only ``text_completion`` interactions for this format (``POST /v1/completions``;
``ExportFilters.object``), and only chat completions for SFT and DPO, so the two never mix. The
prompt is the request's ``prompt`` (a string, or an array of one string); the completion is the
feedback's newest correction when it has text content, else the reply's first choice (without the
prompt an ``echo`` request had repeated in front of it). A record yields a line or the reason it was
skipped: ``failed``, ``batch_prompt`` (several prompts in one request), ``token_prompt`` (token ids:
no tokenizer here to read them back), ``has_suffix`` (an insertion: the format has no place for
the suffix), ``empty_reply``, ``truncated`` (cut by ``max_tokens`` and not corrected).

``encode_prompt_completion`` turns a batch of ``export.stream_batches`` tuples into the builder's
``Encoded`` result, as ``encode.encode_sft`` does for SFT: scrubbed (prompt and completion), serialized,
with the same two dedupe digests (exact: the line; near: prompt and completion normalized).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

from adapters.datasets.dedupe import digest8, normalized_digest
from adapters.datasets.encode import Encoded
from gateway.scrub import Scrubber


def _prompt(request: dict[str, Any]) -> tuple[str | None, str]:
    """The prompt's text, or why there is none to train on."""
    prompt = request.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return (None, "has_suffix") if request.get("suffix") else (prompt, "ok")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return None, "batch_prompt"
    return None, "token_prompt"


def _corrected(correction: Any) -> str | None:
    """A correction's text content (a string, or its text parts joined); None without any."""
    content = correction.get("content") if isinstance(correction, dict) else correction
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) and content.strip() else None


def _reply(request: dict[str, Any], response: dict[str, Any], prompt: str) -> str | None:
    choices = response.get("choices") or []
    text = choices[0].get("text") if choices and isinstance(choices[0], dict) else None
    if not isinstance(text, str):
        return None
    if request.get("echo") and text.startswith(prompt):
        text = text[len(prompt):]
    return text


def prompt_completion_line(status: Any, request: Any, response: Any, correction: Any,
                           finish_reason: Any) -> tuple[dict[str, str] | None, str]:
    """``(line, "ok"|"corrected")`` or ``(None, reason)``, from a record's decoded columns."""
    if status != 200 or not isinstance(response, dict) or not isinstance(request, dict):
        return None, "failed"
    prompt, why = _prompt(request)
    if prompt is None:
        return None, why
    fixed = _corrected(correction)
    if fixed is not None:
        return {"prompt": prompt, "completion": fixed}, "corrected"
    text = _reply(request, response, prompt)
    if text is None or not text.strip():
        return None, "empty_reply"
    if finish_reason == "length":
        return None, "truncated"
    return {"prompt": prompt, "completion": text}, "ok"


def encode_prompt_completion(rows: Iterable[tuple[Any, ...]], scrubber: Scrubber | None, dedupe: bool) -> Encoded:
    loads, dumps = orjson.loads, orjson.dumps
    before = Counter(scrubber.counts) if scrubber is not None else Counter()
    dropped: Counter[str] = Counter()
    data: list[bytes] = []
    exact: list[bytes] = []
    near: list[bytes] = []
    ids: list[str] = []
    hows: list[str] = []
    for iid, status, finish, req, resp, _rating, corr in rows:
        line, how = prompt_completion_line(status, loads(req) if req is not None else None,
                                           loads(resp) if resp is not None else None,
                                           loads(corr) if corr is not None else None, finish)
        if line is None:
            dropped[how] += 1
            continue
        if scrubber is not None:
            line = {"prompt": scrubber.text(line["prompt"]), "completion": scrubber.text(line["completion"])}
        data.append(dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        if dedupe:
            exact.append(digest8(dumps(line, option=orjson.OPT_SORT_KEYS)))
            near.append(normalized_digest([{"role": "user", "content": line["prompt"]},
                                           {"role": "assistant", "content": line["completion"]}]))
        ids.append(iid)
        hows.append(how)
    counts = scrubber.counts - before if scrubber is not None else Counter()
    return data, exact, near, ids, hows, dict(dropped), dict(counts)
