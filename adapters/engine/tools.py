"""Tool calling, as vLLM does it with ``--tool-call-parser hermes``.

    tools = ToolRequest.of(req, template_has_tools, auto_enabled)   # None without tools; raises RequestError
    grammar = tools.grammar()       # "required" / a named function: a Lark grammar of <tool_call> blocks
    content, calls = parse(text)    # the reply's Hermes blocks -> OpenAI's tool_calls

Tools reach the model through its chat template: the model's own when it reads ``tools``
(Qwen 2.5/3, Llama 3.1+, Mistral), else :data:`HERMES_TEMPLATE`, a ChatML template in the style
of vLLM's ``tool_chat_template_hermes.jinja`` (SmolLM2's own template has no tool support). The
model answers a call as ``<tool_call>\\n{"name":...,"arguments":{...}}\\n</tool_call>``: compact JSON,
as the constrained decoder writes it and as the trainer renders past calls (``tool_template``), so
an adapter learns the format it is asked for.

``tool_choice``: ``"none"`` renders the tools and never parses calls; ``"required"`` and a named
function constrain the reply to one or more such blocks (one with ``parallel_tool_calls: false``)
whose ``arguments`` validate against the function's ``parameters`` (``llguidance``, as for
``response_format``), so even a small model calls the tool correctly; ``"auto"`` (the default with
tools) needs ``--enable-auto-tool-choice`` as in vLLM, and parses whatever blocks the model wrote.
A reply with calls has ``finish_reason: "tool_calls"``, ``content`` null when nothing came before
the first block, and ids ``call_<24 hex>``.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from adapters.engine.protocol import ChatCompletionRequest, RequestError

CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_TOOLS = 128  # OpenAI's bound
NO_AUTO = ('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')

HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}You are a function calling AI model. You are provided with function signatures within \
<tools></tools> XML tags. You may call one or more functions to assist with the user query. Don't make \
assumptions about what values to plug into functions. Here are the available tools: <tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
For each function call return a json object with function name and arguments within <tool_call></tool_call> \
XML tags as follows:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and tools and loop.first %}
{%- elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{% if message.content %}{{ message.content }}
{% endif %}
{%- for call in message.tool_calls %}<tool_call>
{"name":{{ call.function.name | tojson }},"arguments":{{ call.function.arguments }}}
</tool_call>
{% endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@dataclass
class ToolRequest:
    tools: list[dict[str, Any]]
    choice: str | None  # "none" | "auto" | "required" | a function's name
    parallel: bool

    @classmethod
    def of(cls, req: ChatCompletionRequest, auto_enabled: bool) -> ToolRequest | None:
        extra = req.model_extra or {}
        tools, choice = extra.get("tools"), extra.get("tool_choice")
        if not tools:
            if choice not in (None, "none", "auto"):
                raise RequestError("tool_choice needs tools.", "tool_choice")
            return None
        if not isinstance(tools, list) or not all(_is_function(t) for t in tools):
            raise RequestError('Each tool must be {"type": "function", "function": {"name": ...}}, its name '
                               "1-64 letters, digits, underscores or dashes (OpenAI's rule).", "tools")
        if len(tools) > MAX_TOOLS:
            raise RequestError(f"At most {MAX_TOOLS} tools are allowed, got {len(tools)}.", "tools")
        names = [t["function"]["name"] for t in tools]
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            if choice.get("type") != "function" or name not in names:
                raise RequestError(f"tool_choice names no tool of this request (tools: {', '.join(names)}).",
                                   "tool_choice")
            choice = name
        elif choice is None:
            choice = "auto"
        elif choice not in ("none", "auto", "required"):
            raise RequestError('tool_choice must be "none", "auto", "required" or a named function.', "tool_choice")
        if choice == "auto" and not auto_enabled:
            raise RequestError(NO_AUTO, "tool_choice")
        return cls(tools, choice, extra.get("parallel_tool_calls") is not False)

    @property
    def parses(self) -> bool:
        """Whether the reply is read for calls."""
        return self.choice != "none"

    def grammar(self) -> str | None:
        """The Lark grammar a reply must follow (``required`` / named), else None."""
        if self.choice in ("none", "auto"):
            return None
        fns = [t["function"] for t in self.tools if self.choice == "required" or t["function"]["name"] == self.choice]
        alternatives = [{"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
                         "properties": {"name": {"const": f["name"]},
                                        "arguments": f.get("parameters") or {"type": "object"}}} for f in fns]
        body = {"anyOf": alternatives, "x-guidance": {"whitespace_flexible": False}}
        more = ' ("\\n" call)*' if self.parallel else ""
        return (f'start: call{more}\ncall: "<tool_call>\\n" body "\\n</tool_call>"\n'
                f"body: %json {json.dumps(body)}\n")


def tool_template(tokenizer: Any) -> str | None:
    """The template tools go through for this tokenizer: its own when it reads ``tools``, the Hermes one
    for a ChatML template without them, else None (no tool support)."""
    return _tool_template(str(tokenizer.chat_template or ""))


@functools.lru_cache(maxsize=8)
def _tool_template(source: str) -> str | None:
    import jinja2.meta

    from adapters.engine.jinja_sandbox import environment

    if "tools" in jinja2.meta.find_undeclared_variables(environment().parse(source)):
        return source
    return HERMES_TEMPLATE if "<|im_start|>" in source else None


def parse(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """``(content before the first call or None, tool_calls)``; text that does not parse stays content."""
    calls = []
    for m in CALL.finditer(text):
        try:
            obj = json.loads(m.group(1))
        except json.JSONDecodeError:
            return text, []
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return text, []
        args = obj.get("arguments", {})
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": obj["name"], "arguments": args if isinstance(args, str) else
                                   json.dumps(args, ensure_ascii=False, separators=(",", ":"))}})
    if not calls:
        return text, []
    before = text[: text.index("<tool_call>")].strip()
    return before or None, calls


def _is_function(tool: Any) -> bool:
    return (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)
            and isinstance(tool["function"].get("name"), str) and NAME.fullmatch(tool["function"]["name"]) is not None)
