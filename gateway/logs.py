"""Structured logs: one JSON object per line, with the request id when there is one.

Secrets never reach a log line: a filter rewrites bearer tokens and API-key-shaped strings
(``sk-...``, ``tl-...``) in every message and argument before it is formatted, whichever
library logged it. (A 30-line formatter, rather than a dependency, because it also has to
run the redaction on records from uvicorn, alembic and httpx.)
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

SECRET = re.compile(r"(?i)(bearer\s+)[^\s\"',]+|\b(sk|tl)-[A-Za-z0-9_\-]{8,}")
STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    return SECRET.sub(lambda m: (m.group(1) or "") + "[REDACTED]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(str(record.msg))
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in record.__dict__.items() if k not in STANDARD})
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def configure(fmt: str | None = None, level: str | None = None) -> None:
    fmt = fmt or os.environ.get("TUNELOOP_LOG_FORMAT", "json")
    handler = logging.StreamHandler()
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("TUNELOOP_LOG_LEVEL", "INFO"))
    for noisy in ("alembic.runtime.plugins", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
