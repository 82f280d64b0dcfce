"""What every fine-tuning backend offers: ``launch() -> JobHandle`` and ``poll() -> Pending | Succeeded | Failed``.

Two backends, one module each (TensorZero's optimizers): ``local.py`` (peft LoRA in a
worker process of its own) and ``openai_backend.py`` (OpenAI's fine-tuning API through
the ``openai`` SDK). The worker (``worker.py``) drives either one and mirrors its
progress into the job's rows, so the API and the CLI only ever read the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# OpenAI's job states; the first three are "not done yet".
PENDING_STATES = ("validating_files", "queued", "running")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


@dataclass
class JobHandle:
    job_id: str  # ours ("ftjob-...")
    backend: str  # "local" | "openai"
    external_id: str | None = None  # OpenAI's job id
    pid: int | None = None  # the local worker's process


@dataclass
class Pending:
    status: str  # one of PENDING_STATES
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Succeeded:
    fine_tuned_model: str
    trained_tokens: int | None = None
    path: str | None = None  # local adapters: the peft folder


@dataclass
class Failed:
    message: str
    code: str = "error"
    param: str | None = None
    cancelled: bool = False


JobInfo = Pending | Succeeded | Failed


class Backend(Protocol):
    def launch(self, job: dict[str, Any]) -> JobHandle: ...
    def poll(self, handle: JobHandle) -> JobInfo: ...


def info_from_row(row: dict[str, Any]) -> JobInfo:
    """A job row as seen by a poller (the local backend's ``poll`` and the CLI's ``--wait``)."""
    status = row["status"]
    if status == "succeeded":
        return Succeeded(row["fine_tuned_model"], row.get("trained_tokens"))
    if status in ("failed", "cancelled"):
        err = row.get("error") or {}
        return Failed(err.get("message", status), err.get("code", status), err.get("param"),
                      cancelled=status == "cancelled")
    return Pending(status)
