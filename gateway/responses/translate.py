"""The Responses API ⇄ Chat Completions: the one table of the mapping.

A ``POST /v1/responses`` body becomes a chat completion request (``to_chat``), served by the chat
path unchanged; the chat completion becomes a Response object (``output_items``, ``usage``,
``response_object``). Request fields, in ``REQUEST`` below:

    input (string | items) ........ messages (after the previous responses' items; gateway.responses.items)
      message user/system/developer (input_text) -> {role, content}
      message assistant (output_text, refusal)   -> {role: assistant, content, refusal}
      function_call {call_id, name, arguments}   -> assistant tool_calls[{id: call_id, ...}]
      function_call_output {call_id, output}     -> {role: tool, tool_call_id: call_id, content}
    instructions .................. a leading system message (not carried to later turns)
    tools [{type: function, ...}] . tools [{type: function, function: {...}}] (strict: true by default)
    tool_choice ................... tool_choice ({type: function, name} -> {type, function: {name}})
    text.format / text.verbosity .. response_format / verbosity
    max_output_tokens ............. max_tokens
    reasoning.effort .............. reasoning_effort (the target refuses it if its model cannot reason)
    same name ..................... temperature, top_p, metadata, user, safety_identifier,
                                    prompt_cache_key, service_tier, parallel_tool_calls (with tools),
                                    store, stream
    checked, nothing to send ...... model, previous_response_id, include ([]), background (false),
                                    truncation (disabled), stream_options, max_tool_calls (no built-in tools)

Back: the message's content -> a ``message`` item with ``output_text`` (and ``refusal``), each tool
call -> a ``function_call`` item (``call_id`` = the tool call's id); usage prompt/completion ->
input/output tokens; finish_reason ``length`` -> status ``incomplete`` (``max_output_tokens``).
Anything else (built-in tools, images and files, ``conversation``, ``prompt``...) is a 400 naming
the param; a null field counts as absent.

A response passed through to a target that serves the Responses API (``gateway.api.responses_native``)
is logged as the chat completion it would have been: its request by ``to_chat(..., strict=False)``
(what chat cannot carry is left out: built-in tools, ``include``, ``truncation: auto``...), its reply
by ``to_completion``, the table above read backwards:

    output message output_text / refusal .... message content (joined) / refusal
    output function_call {call_id, ...} ..... tool_calls[{id: call_id, type: function, function}]
    other output items (reasoning, web_search_call, ...) ... left out
    status completed ........................ finish_reason tool_calls (with calls) or stop
    status incomplete (max_output_tokens) ... finish_reason length (content_filter: content_filter)
    usage input/output/total tokens ......... prompt/completion/total tokens
      input_tokens_details.cached_tokens .... prompt_tokens_details.cached_tokens
      output_tokens_details.reasoning_tokens  completion_tokens_details.reasoning_tokens
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequest, clip
from gateway.responses.objects import bad, function_tool, new_id, response_object, text_part


def _only(allowed: Any, why: str) -> Callable[[Any], dict[str, Any]]:
    def check(value: Any) -> dict[str, Any]:
        if value != allowed:
            raise bad(why, "")
        return {}
    return check


def _tools(tools: Any) -> dict[str, Any]:
    if not isinstance(tools, list):
        raise bad("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise bad(f"Tool type {clip(kind)} is not supported here: only function tools are (built-in "
                      "tools run inside OpenAI's own models).", f"tools[{i}].type")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise bad("Missing required parameter: 'name'.", f"tools[{i}].name", "missing_required_parameter")
        if tool.get("defer_loading"):
            raise bad("Deferred tool loading (tool search) is not supported.", f"tools[{i}].defer_loading")
        out.append({"type": "function", "function": {k: v for k, v in function_tool(tool).items()
                                                      if k != "type" and v is not None}})
    return {"tools": out} if out else {}


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice in ("none", "auto", "required"):
        return {"tool_choice": choice}
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    raise bad(f"Unsupported 'tool_choice': {clip(choice)}; use none, auto, required or "
              "{\"type\": \"function\", \"name\": ...}.", "tool_choice")


def _text(text: Any) -> dict[str, Any]:
    if not isinstance(text, dict):
        raise bad("Invalid type for 'text': expected an object.", "text", "invalid_type")
    out: dict[str, Any] = {}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return out
    if kind == "json_object":
        return {**out, "response_format": {"type": "json_object"}}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or "schema" not in fmt:
            raise bad("A json_schema format needs 'name' and 'schema'.", "text.format")
        schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None}
        return {**out, "response_format": {"type": "json_schema", "json_schema": schema}}
    raise bad(f"Unsupported 'text.format': {clip(fmt)}.", "text.format.type")


def _reasoning(reasoning: Any) -> dict[str, Any]:
    if not isinstance(reasoning, dict):
        raise bad("Invalid type for 'reasoning': expected an object.", "reasoning", "invalid_type")
    for name in ("summary", "generate_summary"):
        if reasoning.get(name) is not None:
            raise bad("Reasoning summaries are not available: responses are served through chat "
                      "completions, which return no reasoning items.", f"reasoning.{name}")
    effort = reasoning.get("effort")
    return {} if effort is None else {"reasoning_effort": effort}


def max_output_tokens_field(value: Any) -> dict[str, Any]:
    """An integer of at least 1; 362.0 is one too (JSON Schema's integer, as the chat path takes it)."""
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 1:
        raise bad(f"Invalid 'max_output_tokens': {clip(value)}; expected an integer of at least 1.",
                  "max_output_tokens")
    return {"max_tokens": int(value)}


def _include(value: Any) -> dict[str, Any]:
    if value:
        raise bad(f"Unsupported 'include' values: {clip(value)}; none of them can be produced here.",
                  "include")
    return {}


def _stream_options(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("include_obfuscation"):
        raise bad("Stream obfuscation is not supported: set stream_options.include_obfuscation to false.",
                  "stream_options.include_obfuscation")
    return {}


def _unsupported(what: str) -> Callable[[Any], dict[str, Any]]:
    def refuse(_value: Any) -> dict[str, Any]:
        raise bad(f"{what} is not supported by this gateway.", "")  # to_chat fills in the param
    return refuse


def _checked_elsewhere(_value: Any) -> dict[str, Any]:
    return {}


# a name: the chat field of that name takes the value as it is; a function: what the value becomes
REQUEST: dict[str, str | Callable[[Any], dict[str, Any]]] = {
    "model": "model",
    "input": _checked_elsewhere,  # -> messages (input_items, to_messages)
    "instructions": _checked_elsewhere,  # -> the leading system message
    "previous_response_id": _checked_elsewhere,  # the endpoint prepends the stored conversation
    "tools": _tools,
    "tool_choice": _tool_choice,
    "text": _text,
    "reasoning": _reasoning,
    "max_output_tokens": max_output_tokens_field,
    "temperature": "temperature",
    "top_p": "top_p",
    "metadata": "metadata",
    "user": "user",
    "safety_identifier": "safety_identifier",
    "prompt_cache_key": "prompt_cache_key",
    "service_tier": "service_tier",
    "parallel_tool_calls": "parallel_tool_calls",
    "store": "store",
    "stream": "stream",
    "include": _include,
    "background": _only(False, "Background responses are not supported: omit 'background' or set it false."),
    "truncation": _only("disabled", "Only truncation 'disabled' is supported."),
    "stream_options": _stream_options,
    "max_tool_calls": _checked_elsewhere,  # caps built-in tool calls, and there are none here
    "conversation": _unsupported("The Conversations API"),
    "prompt": _unsupported("Prompt templates"),
    "context_management": _unsupported("Context management"),
    "moderation": _unsupported("Moderation"),
    "top_logprobs": _unsupported("Log probabilities"),
    "prompt_cache_retention": _unsupported("Prompt cache retention"),
    "prompt_cache_options": _unsupported("Prompt cache options"),
}

FINISH: dict[str | None, tuple[str, str | None]] = {  # finish_reason -> (status, incomplete reason)
    "stop": ("completed", None), "tool_calls": ("completed", None), "function_call": ("completed", None),
    None: ("completed", None), "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


def to_chat(body: dict[str, Any], messages: list[dict[str, Any]], strict: bool = True) -> dict[str, Any]:
    """The chat completion request for ``body`` (checked: unknown and unsupported fields are a 400;
    not ``strict``: left out, and only the function tools kept, for the record of a passed-through one)."""
    instructions = body.get("instructions")
    chat: dict[str, Any] = {"messages": [{"role": "system", "content": instructions}, *messages]
                            if instructions else messages}
    for name, value in body.items():
        convert = REQUEST.get(name)
        if convert is None:
            if not strict:
                continue
            raise bad(f"Unknown parameter: '{clip(name, 64)}'.", name, "unknown_parameter")
        if value is None:
            continue
        if isinstance(convert, str):
            chat[convert] = value
            continue
        if not strict and name == "tools" and isinstance(value, list):
            value = [t for t in value if isinstance(t, dict) and t.get("type") == "function"
                     and not t.get("defer_loading")]
        try:
            chat.update(convert(value))
        except InvalidRequest as exc:
            if not strict:
                continue
            exc.param = exc.param or name
            raise
    if "tools" not in chat:
        chat.pop("parallel_tool_calls", None)  # chat completions allow it only with tools
    if chat.get("stream"):
        chat["stream_options"] = {"include_usage": True}
    return chat


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt, completion = chat_usage.get("prompt_tokens") or 0, chat_usage.get("completion_tokens") or 0
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": (chat_usage.get("prompt_tokens_details") or {})
                                     .get("cached_tokens") or 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": (chat_usage.get("completion_tokens_details") or {})
                                      .get("reasoning_tokens") or 0},
            "total_tokens": chat_usage.get("total_tokens") or prompt + completion}


def output_items(message: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """A chat completion's message as Response output items."""
    items: list[dict[str, Any]] = []
    parts = [text_part(message["content"])] if message.get("content") else []
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        items.append({"id": new_id("msg"), "type": "message", "role": "assistant", "status": status,
                      "content": parts})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        items.append({"id": new_id("fc"), "type": "function_call", "call_id": call.get("id") or new_id("call"),
                      "name": fn.get("name") or "", "arguments": fn.get("arguments") or "",
                      "status": "completed"})
    return items


def from_completion(resp_id: str, body: dict[str, Any], created_at: int,
                    completion: dict[str, Any]) -> dict[str, Any]:
    """A (non-streamed) chat completion as a Response."""
    choice = (completion.get("choices") or [{}])[0]
    status, incomplete = FINISH.get(choice.get("finish_reason"), ("completed", None))
    output = output_items(choice.get("message") or {}, status)
    return response_object(resp_id, body, created_at, status=status, output=output,
                           usage=usage(completion.get("usage")), incomplete=incomplete)


REASONS: dict[str | None, str] = {"max_output_tokens": "length", "content_filter": "content_filter"}


def chat_usage(response_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Response's usage as a chat completion's (``usage`` read backwards)."""
    if not response_usage:
        return None
    prompt, completion = response_usage.get("input_tokens") or 0, response_usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": response_usage.get("total_tokens") or prompt + completion,
            "prompt_tokens_details": {"cached_tokens": (response_usage.get("input_tokens_details") or {})
                                      .get("cached_tokens") or 0},
            "completion_tokens_details": {"reasoning_tokens": (response_usage.get("output_tokens_details") or {})
                                          .get("reasoning_tokens") or 0}}


def to_completion(response: dict[str, Any], completion_id: str, created: int) -> dict[str, Any]:
    """A Response (passed through) as the chat completion it is logged as (the table's last part)."""
    texts, refusals, calls = [], [], []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    texts.append(part.get("text") or "")
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal") or "")
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function",
                          "function": {"name": item.get("name") or "", "arguments": item.get("arguments") or ""}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if refusals:
        message["refusal"] = "".join(refusals)
    if calls:
        message["tool_calls"] = calls
    status, finish = response.get("status"), None
    if status == "completed":
        finish = "tool_calls" if calls else "stop"
    elif status == "incomplete":
        finish = REASONS.get((response.get("incomplete_details") or {}).get("reason"))
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": response.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": chat_usage(response.get("usage"))}
