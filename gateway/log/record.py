"""The interaction record: one row per request through the gateway (and ``StoredResponse``: a stored
Response of ``POST /v1/responses``, which travels the same way).

This is the contract between the online path (which builds records) and the log
package (which queues, spools and stores them). The request path only builds this
object and hands it to ``LogWriter.submit``; it never waits for the database.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class InteractionRecord:
    id: str  # the gateway's own completion id ("chatcmpl-...", "cmpl-..."), the key for feedback
    created: float = field(default_factory=time.time)  # unix seconds
    project: str | None = None
    api_key_id: str | None = None
    requested_model: str = ""  # the name the client sent (alias)
    target: str | None = None  # target name from the config
    upstream_model: str | None = None  # model/adapter name sent upstream
    upstream_base_url: str | None = None
    upstream_id: str | None = None  # the upstream's own completion id
    arm: str | None = None  # canary arm label ("target/model"), None if the alias has one route
    attempts: int = 1
    stream: bool = False
    store: bool = False  # the request's `store` flag
    request: dict[str, Any] = field(default_factory=dict)  # the JSON body as received
    response: dict[str, Any] | None = None  # the chat.completion / text_completion as returned (assembled if streamed)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    total_tokens: int | None = None
    ttft_s: float | None = None  # time to first token (streams) / first byte
    latency_s: float | None = None
    cost_usd: float | None = None
    status: int = 200  # HTTP status returned to the client
    error: dict[str, Any] | None = None  # the error envelope's inner object when status != 200
    metadata: dict[str, str] | None = None  # the request's `metadata` (updatable via the API)
    kind: str = "primary"  # "primary" | "shadow"
    parent_id: str | None = None  # for shadow records: the primary's id
    redact_pii: bool = False  # scrub emails, phones, cards, keys from request/reply before storing
    object: str = "chat.completion"  # the API: "chat.completion" | "text_completion" (legacy /v1/completions)
    # a relayed stream's chunks (``gateway.raw_chunks``: their JSON, joined by \x1e) in place of
    # ``response`` and ``finish_reason``, which the writer assembles from them (``gateway.log.chunks``)
    chunks: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InteractionRecord:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class StoredResponse:
    """A stored Response (``POST /v1/responses`` with ``store``, OpenAI's default): one row of the
    ``responses`` table (``gateway.store.responses``), carried to the writer child like an interaction
    record (the same queue, pipe, spool and batches; committed in the same transaction as the records
    of its batch, as a rule its interaction's: it is queued just before the reply's last bytes, the
    interaction just after) so the request path never waits for the database."""

    id: str  # the response's own id ("resp_...")
    created_at: float
    project: str | None
    completion_id: str | None  # the chat completion it was served as (its interaction)
    previous_response_id: str | None
    response: dict[str, Any]  # the Response object as the client got it
    input_items: list[dict[str, Any]]  # this turn's own input items, normalised
    redact_pii: bool = False  # the alias's redact_pii: PII scrubbed from both before they are stored
    table: str = "responses"  # how a dict from the spool tells it from an interaction record
