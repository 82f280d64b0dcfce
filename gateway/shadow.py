"""Shadow traffic: mirror a share of an alias's requests to a candidate, off the reply path.

The copy starts only after the primary's reply has gone out, runs as a background task,
and is logged as its own record (``kind="shadow"``, ``parent_id`` = the primary's id) for
side-by-side comparison. At most ``limit`` shadow calls run at once per process; beyond
that they are dropped (counted), so under load shadows go first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from prometheus_client import Counter

from gateway.errors import GatewayError
from gateway.log.record import InteractionRecord
from gateway.router import Router

log = logging.getLogger(__name__)

SHADOWS = Counter("tuneloop_shadow_requests_total", "Shadow calls by outcome", ["model", "outcome"])


class Shadower:
    def __init__(self, log_sink: Any, limit: int = 32) -> None:
        self.log = log_sink
        self.limit = limit
        self.running: set[asyncio.Task[None]] = set()

    def maybe(self, router: Router, alias: str, body: dict[str, Any], primary_id: str) -> None:
        shadow = router.aliases[alias].cfg.shadow
        if shadow is None or random.random() >= shadow.share:
            return
        if len(self.running) >= self.limit:
            SHADOWS.labels(alias, "dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._call(router, shadow.model, body, primary_id, router.redacts(alias)))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _call(self, router: Router, model: str, body: dict[str, Any], primary_id: str,
                    redact_pii: bool) -> None:
        started, created = time.perf_counter(), time.time()
        attempt = router.plan(model, body.get("user"))[0]  # no fallbacks for a shadow
        up = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        up["model"] = attempt.model
        record = InteractionRecord(
            id=f"{primary_id}-shadow-{attempt.target}", created=created, requested_model=model,
            target=attempt.target, upstream_model=attempt.model, arm=attempt.arm, request=body,
            store=body.get("store") is True, metadata=body.get("metadata"), kind="shadow",
            parent_id=primary_id, redact_pii=redact_pii)
        try:
            reply = await attempt.provider.complete(up, attempt.lora_path)
            out = reply.body
            record.upstream_id, out["id"] = out.get("id"), record.id
            usage = out.get("usage") or {}
            record.response, record.upstream_base_url = out, reply.base_url
            record.finish_reason = (out.get("choices") or [{}])[0].get("finish_reason")
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = usage.get("completion_tokens")
            record.total_tokens = usage.get("total_tokens")
            SHADOWS.labels(model, "ok").inc()
        except GatewayError as exc:
            record.status, record.error = exc.status_code, exc.to_dict()["error"]
            SHADOWS.labels(model, "error").inc()
        record.latency_s = time.perf_counter() - started
        self.log.submit(record)

    async def drain(self, timeout: float = 10) -> None:
        if self.running:
            await asyncio.wait(self.running, timeout=timeout)
