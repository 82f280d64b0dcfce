"""Chat templates rendered in Jinja's sandbox, as ``transformers`` renders them, with a deadline and a size limit.

The environment is ``transformers``' (``ImmutableSandboxedEnvironment`` with ``trim_blocks``,
``lstrip_blocks``, ``loopcontrols``, a ``{% generation %}`` tag, its ``tojson``, ``raise_exception``,
``strftime_now``, ``dict`` and ``namespace``), so a template renders to the same text, plus guards:

* a deadline, checked on every call the template makes (functions, macros, methods), on every step of a
  ``range`` loop and on every piece of output;
* an output limit, checked on every piece of output, and before ``*`` repeats a string or list;
  ``**`` with a large exponent is refused.

These are cooperative: they bound what the model's own template can be driven to do by request data, and
it renders in a worker thread.  A request-supplied template (``--trust-request-chat-template``) is code
from the client, so it renders in a child process (``python -m adapters.engine.jinja_sandbox``, JSON on
stdin and stdout) under an address-space limit, killed at the deadline by the parent (``template.py``).

This module imports only the standard library and jinja2, so that child starts in well under a second.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

MAX_EXPONENT = 4096


class TemplateLimit(Exception):
    """The render ran out of time (``kind == "timeout"``) or output size (``"size"``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


_limits = threading.local()  # deadline and max_chars of the render running on this thread


def _check_deadline() -> None:
    deadline = getattr(_limits, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise TemplateLimit("timeout", f"The chat template took longer than {_limits.timeout_s:g} s to render.")


def _check_size(n: int) -> None:
    limit = getattr(_limits, "max_chars", None)
    if limit is not None and n > limit:
        raise TemplateLimit("size", f"The rendered chat template exceeds {limit} characters.")


class _GuardedRange:
    """``range()`` whose iteration checks the deadline (the sandbox caps its length at 100,000)."""

    def __init__(self, *args: int):
        self._r = safe_range(*args)

    def __iter__(self) -> Iterator[int]:
        for i in self._r:
            _check_deadline()
            yield i

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, i: Any) -> Any:
        return self._r[i]

    def __contains__(self, x: object) -> bool:
        return x in self._r

    def __reversed__(self) -> Iterator[int]:
        for i in reversed(self._r):
            _check_deadline()
            yield i


class _GuardedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's
        _check_deadline()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    _check_size(len(seq) * times)
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise jinja2.exceptions.SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


class _Generation(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask tag): renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateDict:
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} starts with an underscore")


def environment() -> ImmutableSandboxedEnvironment:
    env = _GuardedEnvironment(trim_blocks=True, lstrip_blocks=True,
                              extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(),
                       namespace=_TemplateNamespace, range=_GuardedRange)
    return env


@lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    return environment().from_string(source)


def render(source: str, context: dict[str, Any], timeout_s: float, max_chars: int) -> str:
    """Render ``source`` with ``context``; raises :class:`TemplateLimit` or Jinja's / Python's errors."""
    template = compile_template(source)
    _limits.deadline, _limits.timeout_s, _limits.max_chars = time.monotonic() + timeout_s, timeout_s, max_chars
    try:
        out: list[str] = []
        size = 0
        for piece in template.generate(**context):
            size += len(piece)
            _check_size(size)
            _check_deadline()
            out.append(piece)
        return "".join(out)
    finally:
        _limits.deadline = _limits.max_chars = None


def _child() -> None:
    """The child process: ``{"source", "context", "timeout_s", "max_chars", "memory_bytes"}`` on stdin,
    ``{"text"}`` or ``{"error", "kind"}`` on stdout."""
    import resource

    job = json.loads(sys.stdin.buffer.read())
    resource.setrlimit(resource.RLIMIT_AS, (job["memory_bytes"], job["memory_bytes"]))
    cpu = int(job["timeout_s"]) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    try:
        out: dict[str, Any] = {"text": render(job["source"], job["context"], job["timeout_s"], job["max_chars"])}
    except TemplateLimit as exc:
        out = {"error": str(exc), "kind": exc.kind}
    except MemoryError:
        out = {"error": "The chat template ran out of memory.", "kind": "memory"}
    except Exception as exc:  # the template's own error, reported to the client
        out = {"error": f"{type(exc).__name__}: {exc}", "kind": "error"}
    sys.stdout.buffer.write(json.dumps(out).encode())


if __name__ == "__main__":
    _child()
