"""Realistic interaction records (~2 KB each) for the log tests and the benchmark."""

from __future__ import annotations

import time
import uuid
from typing import Any

from gateway.log.record import InteractionRecord

_PROMPT = ("My order #{n} arrived damaged: the box was crushed and two of the glasses inside "
           "were broken. I would like a replacement rather than a refund, if possible. ") * 3
_ANSWER = ("I'm sorry your order #{n} arrived damaged. I've started a replacement for the two "
           "broken glasses; you'll get a shipping confirmation by email within 24 hours. ") * 3


def make_record(n: int = 0, *, model: str = "support-bot", created: float | None = None,
                metadata: dict[str, str] | None = None, **kw: Any) -> InteractionRecord:
    rid = kw.pop("id", None) or f"chatcmpl-{uuid.uuid4().hex}"
    created = time.time() if created is None else created
    request = {
        "model": model, "store": True, "metadata": metadata,
        "messages": [
            {"role": "system", "content": "You are a helpful support agent for Acme Glassware."},
            {"role": "user", "content": _PROMPT.format(n=n)},
        ],
        "temperature": 0.2,
    }
    response = {
        "id": rid, "object": "chat.completion", "created": int(created), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": _ANSWER.format(n=n),
                                 "refusal": None, "annotations": []}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 95, "total_tokens": 215,
                  "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0}},
        "service_tier": "default",
    }
    fields: dict[str, Any] = dict(
        id=rid, created=created, project="acme", api_key_id="key-1", requested_model=model,
        target="local", upstream_model="support-v3", upstream_base_url="http://127.0.0.1:8001/v1",
        upstream_id=f"cmpl-{n}", arm="local/support-v3", store=True, request=request,
        response=response, finish_reason="stop", prompt_tokens=120, completion_tokens=95,
        cached_tokens=64, total_tokens=215, ttft_s=0.041, latency_s=0.52, cost_usd=0.00012,
        metadata=metadata,
    )
    fields.update(kw)
    return InteractionRecord(**fields)
