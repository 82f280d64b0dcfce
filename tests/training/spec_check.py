"""``tests.spec.validate`` plus one allowance for OpenAI's spec being OpenAPI 3.0.

The spec writes ``"minimum": 0, "exclusiveMinimum": true`` (3.0's boolean form) for
hyperparameters such as ``beta`` and ``learning_rate_multiplier``; ``tests/spec.py``
validates with JSON Schema 2020-12, where ``exclusiveMinimum`` is a number, so ``true``
reads as ``> 1`` and a legal ``beta: 0.1`` is refused. Errors from exactly that rule, on
a positive number, are ignored here; every other error fails the test.
"""

from __future__ import annotations

from typing import Any

from tests.spec import _validator


def _boolean_exclusive_minimum(err: Any) -> bool:
    if err.validator != "oneOf" or not isinstance(err.instance, (int, float)) or err.instance <= 0:
        return False
    return any(c.validator == "exclusiveMinimum" and c.validator_value is True for c in err.context)


def validate(schema: str, body: Any) -> None:
    errors = [e for e in _validator(schema).iter_errors(body) if not _boolean_exclusive_minimum(e)]
    if errors:
        raise errors[0]
