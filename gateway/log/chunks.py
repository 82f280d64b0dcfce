"""A relayed stream's reply, assembled in the log writer (``gateway.raw_chunks`` defers it here).

The serving process relays a stream's chunks as bytes and hands the record over with the chunks
(``InteractionRecord.chunks``) in place of the reply; ``to_row`` asks this module for the reply and
its finish reason, built by the API's own assembler exactly as the serving process would have.
"""

from __future__ import annotations

from typing import Any

from gateway.assemble import ChunkAssembler, StreamAssembler
from gateway.raw_chunks import parse
from gateway.text_completion import TextAssembler

ASSEMBLERS: dict[str, type[ChunkAssembler]] = {"chat.completion": StreamAssembler,
                                              "text_completion": TextAssembler}


def assemble(chunks: str, obj: str | None, record_id: str, created: float | None) -> tuple[dict[str, Any], str | None]:
    """(the reply, its first choice's finish reason) from a record's ``chunks``."""
    asm = ASSEMBLERS.get(obj or "chat.completion", StreamAssembler)()
    for chunk in parse(chunks.encode()):
        asm.add(chunk)
    reply: dict[str, Any] = asm.completion(record_id, int(created or 0))  # type: ignore[attr-defined]
    choices = reply.get("choices") or []
    return reply, choices[0].get("finish_reason") if choices else None
