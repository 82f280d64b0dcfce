"""OpenAI's fine-tuning file rules, line by line, with precise reasons.

``check_line(obj, fmt)`` returns the list of problems of one parsed line (empty when
valid). Rules (docs: fine-tuning/chat-input and /preference-input; the spec's
``FineTuneChatRequestInput``, ``FineTunePreferenceRequestInput`` and
``FineTuneChatCompletionRequestAssistantMessage``):

- roles: system, developer, user, assistant, tool; each role's keys only;
- content: a string, or a non-empty list of ``{"type": "text", "text": str}`` parts
  (user parts may also be ``image_url``); assistant content may be null with tool_calls;
- assistant ``weight`` ∈ {0, 1}; ``tool_calls``: ``[{id, type: "function",
  function: {name, arguments: JSON string}}]``; a ``tool`` message needs ``tool_call_id``;
- SFT: ``messages`` ends with an assistant message; ``tools`` a list of function tools;
  ``parallel_tool_calls`` a bool; no other top-level keys;
- DPO: ``input.messages`` (not ending with assistant), ``preferred_output`` and
  ``non_preferred_output`` each exactly one assistant message, and they differ;
- prompt_completion (the legacy format): ``prompt`` a string and ``completion`` a non-empty string,
  nothing else. Its tokens are counted as a user turn and an assistant turn.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.datasets.messages import KEYS, ROLES

SFT_KEYS = {"messages", "tools", "parallel_tool_calls", "metadata"}
DPO_KEYS = {"input", "preferred_output", "non_preferred_output", "metadata"}
INPUT_KEYS = {"messages", "tools", "parallel_tool_calls"}
PROMPT_COMPLETION_KEYS = {"prompt", "completion"}


def detect_format(obj: Any) -> str:
    if isinstance(obj, dict) and "input" in obj:
        return "dpo"
    if isinstance(obj, dict) and "prompt" in obj and "messages" not in obj:
        return "prompt_completion"
    return "sft"


def _content(where: str, msg: dict[str, Any], role: str) -> list[str]:
    content = msg.get("content")
    if content is None:
        if role == "assistant" and msg.get("tool_calls"):
            return []
        return [f"{where}: 'content' is missing or null"]
    if isinstance(content, str):
        return []
    if not isinstance(content, list) or not content:
        return [f"{where}: 'content' must be a string or a non-empty list of parts"]
    errs = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image_url" and role == "user":
            continue
        errs.append(f"{where}.content[{j}]: must be {{'type': 'text', 'text': str}}")
    return errs


def _tool_calls(where: str, calls: Any) -> list[str]:
    if not isinstance(calls, list) or not calls:
        return [f"{where}: 'tool_calls' must be a non-empty list"]
    errs = []
    for j, call in enumerate(calls):
        w = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            errs.append(f"{w}: must be an object")
            continue
        if not isinstance(call.get("id"), str) or not call["id"]:
            errs.append(f"{w}: 'id' must be a non-empty string")
        if call.get("type") != "function":
            errs.append(f"{w}: 'type' must be 'function'")
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            errs.append(f"{w}: 'function.name' must be a non-empty string")
            continue
        args = fn.get("arguments")
        if not isinstance(args, str):
            errs.append(f"{w}: 'function.arguments' must be a JSON string")
        else:
            try:
                orjson.loads(args)
            except orjson.JSONDecodeError:
                errs.append(f"{w}: 'function.arguments' is not valid JSON")
    return errs


def check_message(where: str, msg: Any) -> list[str]:
    if not isinstance(msg, dict):
        return [f"{where}: must be an object"]
    role = msg.get("role")
    if role not in ROLES:
        return [f"{where}: role {role!r} is not one of {', '.join(ROLES)}"]
    errs = [f"{where}: key {k!r} is not allowed in a {role} message"
            for k in msg if k not in KEYS[role]]
    errs += _content(where, msg, role)
    if role == "assistant":
        if "weight" in msg and (isinstance(msg["weight"], bool) or msg["weight"] not in (0, 1)):
            errs.append(f"{where}: 'weight' must be 0 or 1")
        if "tool_calls" in msg:
            errs += _tool_calls(where, msg["tool_calls"])
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        errs.append(f"{where}: a tool message needs 'tool_call_id'")
    return errs


def _messages(where: str, msgs: Any) -> list[str]:
    if not isinstance(msgs, list) or not msgs:
        return [f"{where}: must be a non-empty list of messages"]
    errs: list[str] = []
    for i, m in enumerate(msgs):
        errs += check_message(f"{where}[{i}]", m)
    return errs


def _tools(obj: dict[str, Any]) -> list[str]:
    errs = []
    if "tools" in obj:
        tools = obj["tools"]
        if not isinstance(tools, list):
            return ["tools: must be a list"]
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" \
                    or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                errs.append(f"tools[{i}]: must be {{'type': 'function', 'function': {{'name', ...}}}}")
    if "parallel_tool_calls" in obj and not isinstance(obj["parallel_tool_calls"], bool):
        errs.append("parallel_tool_calls: must be a boolean")
    return errs


def check_sft(obj: dict[str, Any]) -> list[str]:
    errs = [f"unknown top-level key {k!r}" for k in obj if k not in SFT_KEYS]
    if "messages" not in obj:
        return [*errs, "missing 'messages'"]
    errs += _messages("messages", obj["messages"]) + _tools(obj)
    msgs = obj["messages"]
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict):
        if msgs[-1].get("role") != "assistant":
            errs.append("messages: the last message must be from the assistant")
        elif msgs[-1].get("weight") == 0 and not any(
                isinstance(m, dict) and m.get("role") == "assistant" and m.get("weight", 1) == 1
                for m in msgs):
            errs.append("messages: no assistant message to train on (every weight is 0)")
    return errs


def _output(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) != 1:
        return [f"{name}: must be a list of exactly one assistant message"]
    errs = check_message(f"{name}[0]", value[0])
    if isinstance(value[0], dict) and value[0].get("role") != "assistant":
        errs.append(f"{name}[0]: role must be 'assistant'")
    return errs


def check_dpo(obj: dict[str, Any]) -> list[str]:
    errs = [f"unknown top-level key {k!r}" for k in obj if k not in DPO_KEYS]
    for key in ("input", "preferred_output", "non_preferred_output"):
        if key not in obj:
            errs.append(f"missing {key!r}")
    inp = obj.get("input")
    if "input" in obj:
        if not isinstance(inp, dict):
            errs.append("input: must be an object")
        else:
            errs += [f"input: unknown key {k!r}" for k in inp if k not in INPUT_KEYS]
            errs += _messages("input.messages", inp.get("messages")) + _tools(inp)
            msgs = inp.get("messages")
            if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) \
                    and msgs[-1].get("role") == "assistant":
                errs.append("input.messages: must not end with an assistant message")
    for key in ("preferred_output", "non_preferred_output"):
        if key in obj:
            errs += _output(key, obj[key])
    if not errs and obj["preferred_output"] == obj["non_preferred_output"]:
        errs.append("preferred_output and non_preferred_output are identical")
    return errs


def check_prompt_completion(obj: dict[str, Any]) -> list[str]:
    errs = [f"unknown top-level key {k!r}" for k in obj if k not in PROMPT_COMPLETION_KEYS]
    if not isinstance(obj.get("prompt"), str):
        errs.append("prompt: must be a string")
    if not isinstance(obj.get("completion"), str) or not obj["completion"].strip():
        errs.append("completion: must be a non-empty string")
    return errs


def check_line(obj: Any, fmt: str | None = None) -> list[str]:
    if not isinstance(obj, dict):
        return ["a line must be a JSON object"]
    fmt = fmt or detect_format(obj)
    if fmt == "prompt_completion":
        return check_prompt_completion(obj)
    return check_dpo(obj) if fmt == "dpo" else check_sft(obj)


def conversation(obj: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The longest conversation a line trains on (DPO: input + the longer output; prompt-completion:
    the prompt as a user turn, the completion as the assistant's)."""
    if "prompt" in obj and "messages" not in obj:
        return [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}], None
    if "input" in obj:
        outs = [obj["preferred_output"][0], obj["non_preferred_output"][0]]
        longest = max(outs, key=lambda m: len(orjson.dumps(m)))
        return [*obj["input"]["messages"], longest], obj["input"].get("tools")
    return obj["messages"], obj.get("tools")
