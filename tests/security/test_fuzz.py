"""Schema-driven fuzzing (schemathesis) of every route in the gateway's own OpenAPI document.

Properties checked on every generated request: no 5xx, every status and body as documented
(errors in OpenAI's envelope), bad input rejected with 4xx. The number of cases that ran is
printed at the end and recorded in the README.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.fixtures.gateway import GatewayProcess

CASES: list[str] = []
# per operation; CI runs a fixed (derandomized) set so a landing is reproducible
EXAMPLES = int(os.environ.get("TUNELOOP_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzz_gateway(fake_upstream, tmp_path_factory):
    config = {
        "targets": {"fake": {"kind": "vllm", "base_urls": [fake_upstream.base_url], "timeout_s": 5}},
        "models": {"echo": {"routes": [{"target": "fake", "model": "fake-echo"}]},
                   "tools": {"routes": [{"target": "fake", "model": "fake-tools"}]}},
    }
    gw = GatewayProcess(config, tmp_path_factory.mktemp("fuzz"), env={"TUNELOOP_AUTH": "off"})
    yield gw
    gw.stop()
    print(f"\nschemathesis: {len(CASES)} cases")


@pytest.fixture(scope="module")
def api_schema(fuzz_gateway):
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway.root}/openapi.json")
    skip = os.environ.get("TUNELOOP_FUZZ_SKIP")  # a path regex, for triage only
    return schema.exclude(path_regex=skip) if skip else schema


# Operations whose input refers to content the schema cannot describe (a training file's
# JSONL lines, an uploaded file's id): a schema-valid request may still be rightly refused
# with 400, so "positive data is accepted" is not checked there; every other check is.
SEMANTIC = {"POST /v1/files", "POST /v1/fine_tuning/jobs"}


def _fuzz(operation):
    from hypothesis import given

    excluded = [positive_data_acceptance] if operation.label in SEMANTIC else None

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None, derandomize=os.environ.get("CI") == "true")
    def run(case):
        CASES.append(operation.label)
        case.call_and_validate(excluded_checks=excluded)

    return run


def test_no_5xx_and_every_response_as_documented(api_schema):
    # schemathesis' pytest plugin does not run under pytest 9 yet, so the operations are
    # driven here with hypothesis directly (same strategies, same checks).
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        try:
            _fuzz(operation)()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


REQUEST_SCHEMAS = {"ChatRequest", "Message", "AssistantMessage", "StorableValue"}


def test_every_documented_string_says_it_holds_no_nul(fuzz_gateway):
    """The gateway refuses NUL everywhere (``validate.check_storable``), so every string its
    request schemas accept says so; a nullable string (``"type": ["string", "null"]``) too.
    (The fuzz above meets a missed one only when it happens to draw a NUL there.)"""
    import httpx

    spec = httpx.get(f"{fuzz_gateway.root}/openapi.json").json()
    missing = []

    def walk(node, where):
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
        elif isinstance(node, dict):
            kinds = node.get("type")
            kinds = kinds if isinstance(kinds, list) else [kinds]
            if "string" in kinds and "enum" not in node and "const" not in node and "pattern" not in node:
                missing.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")

    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            walk(body, f"{method.upper()} {path}")
    for name, schema in spec["components"]["schemas"].items():  # what the bodies' $refs point at
        if name in REQUEST_SCHEMAS:
            walk(schema, name)
    assert not missing, missing
