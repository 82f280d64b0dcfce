"""The loop's settings per alias: the ``loop:`` section of the gateway YAML (one config file).

Validated with the same strictness as the rest of the file; ``tuneloop loop`` and
``tuneloop migrate`` read it from the config every command resolves (``--config`` /
``$TUNELOOP_CONFIG``)::

    loop:
      support-bot:                 # the alias
        min_feedback: 20           # new ratings/corrections since the last cycle that start one
        base_model: smollm2-135m-instruct
        dataset: {format: sft, val_fraction: 0.2, has_correction: true, min_rating: null}
        training: {n_epochs: 3, batch_size: 8, learning_rate: 0.001, max_steps: 60, max_length: 256}
        eval:
          data: null               # a held-out JSONL; default: the dataset's validation split
          checks: ["contains:Hi there!"]   # run-wide task checks (per-example ones come with the data)
          max_tokens: 64
          min_delta: 0.0           # the gate: candidate score must exceed live's by more than this
        canary:
          percent: 10              # 0 skips the canary: promote straight after the gate
          min_requests: 30         # per arm before deciding
          max_error_rate_delta: 0.02   # candidate error rate minus live's
          min_rating_delta: 0.0    # candidate mean rating minus live's
          min_ratings: 10          # per arm before deciding (0: do not wait for ratings)
          max_latency_ratio: 1.5   # candidate p50 / live p50
          timeout_s: 86400         # still undecided then: roll back
          poll_s: 10

An alias without an entry gets the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSettings(_Strict):
    format: str = "sft"
    val_fraction: float = 0.2
    has_correction: bool = True
    min_rating: float | None = None


class EvalSettings(_Strict):
    data: Path | None = None
    checks: list[str] = Field(default_factory=list)
    max_tokens: int = 64
    min_delta: float = 0.0
    judge: str | None = None
    limit: int | None = None


class CanarySettings(_Strict):
    percent: float = 0.0
    min_requests: int = 30
    max_error_rate_delta: float = 0.02
    min_rating_delta: float = 0.0
    min_ratings: int = 10
    max_latency_ratio: float = 1.5
    timeout_s: float = 86400.0
    poll_s: float = 10.0


class LoopSettings(_Strict):
    min_feedback: int = 20
    base_model: str = "smollm2-135m-instruct"
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    training: dict[str, Any] = Field(default_factory=lambda: {"n_epochs": 3, "learning_rate": 1e-3,
                                                              "batch_size": 8, "max_length": 256})
    eval: EvalSettings = Field(default_factory=EvalSettings)
    canary: CanarySettings = Field(default_factory=CanarySettings)

