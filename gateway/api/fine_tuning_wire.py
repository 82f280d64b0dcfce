"""Rows as OpenAI's objects: ``FineTuningJob``, ``FineTuningJobEvent``, ``FineTuningJobCheckpoint``, ``OpenAIFile``.

Shared by the gateway's ``/v1`` routers and ``tuneloop jobs show`` (``adapters.training.cli``),
so both print the same thing. Times are whole seconds, as OpenAI sends them.
"""

from __future__ import annotations

from typing import Any

AUTO_KEYS = ("batch_size", "learning_rate_multiplier", "n_epochs")


def method_of(row: dict[str, Any]) -> dict[str, Any]:
    """The job's ``method`` without private keys (``_openai``: the backend's connection)."""
    method = row.get("method") or {"type": "supervised", "supervised": {"hyperparameters": {}}}
    return {k: v for k, v in method.items() if not k.startswith("_")}


def hyperparameters_of(method: dict[str, Any]) -> dict[str, Any]:
    kind = method.get("type", "supervised")
    return dict(((method.get(kind) or {}).get("hyperparameters")) or {})


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    method = method_of(row)
    hp = hyperparameters_of(method)
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": int(row["created"]),
        "error": row.get("error"),
        "fine_tuned_model": row.get("fine_tuned_model"),
        "finished_at": int(row["finished"]) if row.get("finished") else None,
        "hyperparameters": {k: hp.get(k, "auto") for k in AUTO_KEYS},
        "model": row["model"],
        "organization_id": row.get("project") or "tuneloop",
        "result_files": list(row.get("result_files") or []),
        "status": row["status"],
        "trained_tokens": row.get("trained_tokens"),
        "training_file": row.get("training_file") or "",
        "validation_file": row.get("validation_file"),
        "integrations": None,
        "seed": int(row.get("seed") or 0),
        "estimated_finish": None,
        "method": method,
        "metadata": row.get("metadata"),
    }


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": row["id"], "created_at": int(row["created"]),
            "level": row["level"], "message": row["message"], "type": row["type"], "data": row.get("data") or {}}


CHECKPOINT_METRICS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                      "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy")


def checkpoint_object(row: dict[str, Any]) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in (row.get("metrics") or {}).items() if k in CHECKPOINT_METRICS}
    return {"object": "fine_tuning.job.checkpoint", "id": row["id"], "created_at": int(row["created"]),
            "fine_tuned_model_checkpoint": row["model"], "fine_tuning_job_id": row["job_id"],
            "step_number": int(row["step"]), "metrics": metrics}


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    out = {"id": row["id"], "object": "file", "bytes": int(row["bytes"]), "created_at": int(row["created"]),
           "filename": row["filename"], "purpose": row["purpose"], "status": "processed"}
    if row.get("expires"):
        out["expires_at"] = int(row["expires"])
    return out


def page(data: list[dict[str, Any]], has_more: bool, ids: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if ids:
        out["first_id"] = data[0]["id"] if data else None
        out["last_id"] = data[-1]["id"] if data else None
    return out
