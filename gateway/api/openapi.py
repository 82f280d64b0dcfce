"""The gateway's OpenAPI document: FastAPI's, plus ``POST /v1/chat/completions``.

The hot path is a raw ASGI endpoint in front of FastAPI (``gateway.api.chat``), so FastAPI
does not know it; its request and response shapes are described here with pydantic models
(OpenAI's, trimmed to what the gateway checks; extra request fields are allowed and
forwarded) and merged into the document. The ``model`` enum lists this deployment's names.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.validate import MAX_DEPTH, RANGES, ROLES


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal[tuple(sorted(ROLES - {"assistant"}))]  # type: ignore[valid-type]
    content: str | list[dict[str, Any]]


class AssistantMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["assistant"]
    content: str | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message | AssistantMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ReplyMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["assistant"]
    content: str | None


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: ReplyMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]


ERROR_STATUSES = ("400", "401", "403", "404", "413", "429", "502", "503", "504")


NO_NUL = r"^[^\u0000]*$"
STORABLE = "#/components/schemas/StorableValue"
# validate.check_storable: any JSON without NUL, nested at most MAX_DEPTH levels (the body is one)
STORABLE_SCHEMA: dict[str, Any] = {
    "description": f"Any JSON value without NUL characters; the whole body nests at most {MAX_DEPTH} levels.",
    "anyOf": [{"type": "string", "pattern": NO_NUL}, {"type": ["number", "boolean", "null"]},
              {"type": "array", "items": {"$ref": STORABLE}},
              {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": {"$ref": STORABLE}}]}


def _storable(node: Any) -> None:
    """Every string without NUL, every open object's extra values storable (in place)."""
    if isinstance(node, list):
        for item in node:
            _storable(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
            for schema in value.values():  # a map of names to schemas: a property may be called "type"
                _storable(schema)
        else:
            _storable(value)
    kinds = node.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds} if isinstance(kinds, str) else set()
    if "string" in kinds and "enum" not in node:
        node["pattern"] = NO_NUL
    if "object" in kinds:
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": NO_NUL}
        if node.get("additionalProperties", True) is True:
            node["additionalProperties"] = {"$ref": STORABLE}


METADATA_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "null"}, {
    "type": "object", "maxProperties": 16, "propertyNames": {"maxLength": 64, "pattern": NO_NUL},
    "additionalProperties": {"type": "string", "maxLength": 512, "pattern": NO_NUL}}]}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses its JSON body itself (``asgi.parse_json``:
    storable, so its strings are documented without NUL)."""
    schema = copy.deepcopy(schema)
    _storable(schema)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _mirror_validation(request: dict[str, Any]) -> None:
    """The request schema says exactly what ``gateway.validate`` checks (one source of truth)."""
    props = request["properties"]
    for name, (low, high, integer) in RANGES.items():
        props[name] = {"anyOf": [{"type": "integer" if integer else "number", "minimum": low,
                                  "maximum": high}, {"type": "null"}]}
    props["stop"] = {"anyOf": [{"type": "string"}, {"type": "null"}, {
        "type": "array", "maxItems": 4, "items": {"type": "string"}}]}
    props["metadata"] = copy.deepcopy(METADATA_SCHEMA)
    props["stream_options"] = {"anyOf": [{"type": "object"}, {"type": "null"}]}
    request["if"] = {"properties": {"stream_options": {"type": "object"}}, "required": ["stream_options"]}
    request["then"] = {"properties": {"stream": {"const": True}}, "required": ["stream"]}


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (ChatRequest, ChatCompletion, ErrorResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _errors_as_we_send_them(doc: dict[str, Any], error: dict[str, Any]) -> None:
    """FastAPI documents 422 for bad input; we answer 400 (OpenAI's envelope), and any route
    may answer 401 (auth) or 404."""
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            statuses = ["400", "401", "404"] + (["403"] if path.startswith("/v1/admin") else [])
            if method in ("post", "put", "patch"):
                statuses.append("413")
            for status in statuses:
                responses.setdefault(status, {"description": "Error", **error})
    doc["components"]["schemas"].pop("HTTPValidationError", None)
    doc["components"]["schemas"].pop("ValidationError", None)


def with_chat_completions(doc: dict[str, Any], model_names: list[str]) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_schemas())
    request = schemas["ChatRequest"]
    _mirror_validation(request)
    schemas["StorableValue"] = STORABLE_SCHEMA
    for name in ("ChatRequest", "Message", "AssistantMessage"):
        _storable(schemas[name])
    request["properties"]["model"] = {"type": "string", "enum": model_names}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    operation = {
        "summary": "Create a chat completion (routed to the model's targets)",
        "operationId": "createChatCompletion",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ChatRequest"}}}},
        "responses": {
            "200": {"description": "A completion, or a stream of chunks when `stream` is true",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                                # each server-sent event: `data:` a chat.completion.chunk
                                # (or an error envelope), the last one `[DONE]`
                                "text/event-stream": {"schema": {
                                    "type": "object", "required": ["data"],
                                    "properties": {"data": {"type": "string"},
                                                   "event": {"type": "string"}}}}}},
            **{s: {"description": "Error", **error} for s in ERROR_STATUSES},
        },
    }
    _errors_as_we_send_them(doc, error)
    doc.setdefault("paths", {}).setdefault("/v1/chat/completions", {})["post"] = operation
    return doc


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# POST /v1/responses, trimmed to what is translated onto chat completions (gateway.responses.translate),
# which every alias takes; every other field of OpenAI's CreateResponse is a 400 there, so the schema closes
# the object (an alias passed through to targets that serve the Responses API takes more of them as sent:
# gateway.responses.passthrough).
RESPONSE_INPUT_MESSAGE: dict[str, Any] = {
    "type": "object", "required": ["role", "content"], "additionalProperties": False,
    "properties": {"type": {"type": "string", "enum": ["message"]},
                   "role": {"type": "string", "enum": ["user", "system", "developer", "assistant"]},
                   "content": {"type": "string"}}}
RESPONSE_FUNCTION_TOOL: dict[str, Any] = {
    "type": "object", "required": ["type", "name"], "additionalProperties": False,
    "properties": {"type": {"type": "string", "enum": ["function"]}, "name": {"type": "string", "minLength": 1},
                   "description": _nullable({"type": "string"}),
                   "parameters": _nullable({"type": "object"}), "strict": _nullable({"type": "boolean"})}}
RESPONSE_REQUEST: dict[str, Any] = {
    "type": "object", "required": ["model", "input"], "additionalProperties": False,
    "properties": {
        "model": {"type": "string"},
        "input": {"anyOf": [{"type": "string"},
                            {"type": "array", "minItems": 1, "items": RESPONSE_INPUT_MESSAGE}]},
        "instructions": _nullable({"type": "string"}),
        "previous_response_id": _nullable({"type": "string"}),
        "stream": _nullable({"type": "boolean"}), "store": _nullable({"type": "boolean"}),
        "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
        "top_p": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
        "max_output_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": 2**31 - 1}),
        "metadata": METADATA_SCHEMA, "user": {"type": "string"},
        "tools": _nullable({"type": "array", "items": RESPONSE_FUNCTION_TOOL}),
        "tool_choice": _nullable({"type": "string", "enum": ["none", "auto", "required"]}),
        "parallel_tool_calls": _nullable({"type": "boolean"}),
    }}
RESPONSE_OBJECT: dict[str, Any] = {
    "type": "object", "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {"id": {"type": "string"}, "object": {"type": "string", "enum": ["response"]},
                   "created_at": {"type": "number"}, "status": {"type": "string"}, "model": {"type": "string"},
                   "output": {"type": "array", "items": {"type": "object"}}}}


def with_responses(doc: dict[str, Any], model_names: list[str]) -> dict[str, Any]:
    """``POST /v1/responses`` (a raw ASGI endpoint too, ``gateway.api.responses``) in the document."""
    body = json_body(RESPONSE_REQUEST)
    body["requestBody"]["content"]["application/json"]["schema"]["properties"]["model"] = {
        "type": "string", "enum": model_names}
    doc["components"]["schemas"]["ResponseObject"] = RESPONSE_OBJECT
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    doc["paths"]["/v1/responses"] = {"post": {
        "summary": "Create a model response (Responses API), served through chat completions",
        "operationId": "createResponse", **body,
        "responses": {
            "200": {"description": "A Response, or a stream of Responses events when `stream` is true",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResponseObject"}},
                                "text/event-stream": {"schema": {
                                    "type": "object", "required": ["data"],
                                    "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}}},
            **{s: {"description": "Error", **error} for s in ERROR_STATUSES}}}}
    return doc
