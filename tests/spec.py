"""Validates response bodies against OpenAI's official OpenAPI spec (shared/reference)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATHS = [
    Path(__file__).resolve().parents[1] / "shared/reference/openai-openapi/openapi.json",
    Path(__file__).resolve().parents[2] / "shared/reference/openai-openapi/openapi.json",
]
URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 idioms -> JSON Schema 2020-12 (the spec mixes both): ``nullable: true``
    becomes a null type, boolean ``exclusiveMinimum``/``exclusiveMaximum`` become numbers."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), bool):  # 3.0's boolean form -> JSON Schema's number form
            if node.pop(bound) and limit in node:
                node[bound] = node.pop(limit)
    if node.pop("nullable", False) is True:
        t = node.get("type")
        if isinstance(t, str):
            node["type"] = [t, "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        elif isinstance(t, list):
            node["type"] = [*t, "null"] if "null" not in t else t
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


@cache
def _registry() -> Registry:
    path = next(p for p in SPEC_PATHS if p.exists())
    spec = _nullable(json.loads(path.read_text()))
    return Registry().with_resource(URI, Resource.from_contents(spec, default_specification=DRAFT202012))


@cache
def _validator(schema: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{URI}#/components/schemas/{schema}"}, registry=_registry())


def validate(schema: str, instance: Any) -> None:
    """Raise jsonschema.ValidationError if ``instance`` does not match ``schema``."""
    _validator(schema).validate(instance)
