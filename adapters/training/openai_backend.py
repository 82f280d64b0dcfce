"""The OpenAI backend: fine-tune an OpenAI model through the ``openai`` SDK.

``launch(job)`` uploads the job's file(s) (``purpose="fine-tune"``) and creates the job
with its ``method`` (supervised or dpo, hyperparameters), suffix, seed and validation
file; ``poll(handle)`` retrieves it and mirrors OpenAI's new events into ours (OpenAI's
event ids are kept, so a re-run never duplicates one). :func:`follow` is what the
worker runs: launch (or pick up the OpenAI job a previous worker launched), then poll
until the job ends, passing a cancel on to OpenAI. A succeeded job's ``ft:...`` model
becomes the job's ``fine_tuned_model`` and a ``candidate`` row in ``adapters`` (no path:
it lives at OpenAI), ready to be routed to through a target of kind ``openai``.

Connection: the job's ``_openai`` settings (the gateway config's openai target:
``base_url``, ``api_key_env``), else ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
``TUNELOOP_OPENAI_POLL_S`` sets the poll interval (default 10 s).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import openai
from openai.types.fine_tuning.job_create_params import Method

from adapters.training.backend import Failed, JobHandle, JobInfo, Pending, Succeeded
from gateway.store.files import FileStore
from gateway.store.jobs import JobStore


def make_client(settings: dict[str, Any] | None) -> openai.OpenAI:
    settings = settings or {}
    key_env = settings.get("api_key_env") or "OPENAI_API_KEY"
    key = os.environ.get(key_env)
    if not key:
        raise RuntimeError(f"no OpenAI API key: environment variable {key_env} is not set")
    base_url = settings.get("base_url") or os.environ.get("OPENAI_BASE_URL") or None
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=3, timeout=60)


def _clean_method(method: dict[str, Any]) -> Method:
    """Our stored method minus private keys and values OpenAI would refuse (local extras)."""
    kind = method.get("type", "supervised")
    hp = ((method.get(kind) or {}).get("hyperparameters")) or {}
    allowed = {"batch_size", "learning_rate_multiplier", "n_epochs", "beta"}
    return cast(Method, {"type": kind, kind: {"hyperparameters": {k: v for k, v in hp.items() if k in allowed}}})


class OpenAIBackend:
    def __init__(self, client: openai.OpenAI, store: JobStore, files: FileStore) -> None:
        self.client, self.store, self.files = client, store, files

    def _upload(self, file_id: str) -> str:
        row = self.files.get(file_id)
        if row is None:
            raise FileNotFoundError(f"file {file_id} no longer exists")
        content = Path(row["path"]).read_bytes()
        return self.client.files.create(file=(row["filename"], content), purpose="fine-tune").id

    def launch(self, job: dict[str, Any]) -> JobHandle:
        training = self._upload(job["training_file"])
        validation = self._upload(job["validation_file"]) if job.get("validation_file") else None
        self.store.add_event(job["id"], f"Uploaded training file to OpenAI as {training}",
                             data={"training_file": training, "validation_file": validation})
        optional = {"validation_file": validation, "suffix": job.get("suffix"), "seed": job.get("seed"),
                    "metadata": job.get("metadata")}
        given: dict[str, Any] = {k: v for k, v in optional.items() if v}
        created = self.client.fine_tuning.jobs.create(
            model=job["model"], training_file=training, method=_clean_method(job["method"] or {}), **given)
        self.store.update(job["id"], external_id=created.id)
        self.store.add_event(job["id"], f"Created OpenAI fine-tuning job {created.id}", data={"id": created.id})
        return JobHandle(job["id"], "openai", external_id=created.id)

    def poll(self, handle: JobHandle) -> JobInfo:
        assert handle.external_id is not None
        remote = self.client.fine_tuning.jobs.retrieve(handle.external_id)
        self._mirror_events(handle)
        if remote.status == "succeeded" and remote.fine_tuned_model:
            return Succeeded(remote.fine_tuned_model, remote.trained_tokens)
        if remote.status in ("failed", "cancelled"):
            err = remote.error
            return Failed(err.message if err and err.message else f"OpenAI job {remote.status}",
                          (err.code if err else None) or remote.status, err.param if err else None,
                          cancelled=remote.status == "cancelled")
        return Pending(remote.status)

    def _mirror_events(self, handle: JobHandle) -> None:
        assert handle.external_id is not None
        fresh = []
        for ev in self.client.fine_tuning.jobs.list_events(handle.external_id, limit=100):
            if self.store.has_event(ev.id):
                break  # newest first: everything older is mirrored already
            fresh.append(ev)
        for ev in reversed(fresh):
            self.store.add_event(handle.job_id, ev.message, level=ev.level, type=ev.type or "message",
                                 data=dict(ev.data) if isinstance(ev.data, dict) else {},
                                 created=float(ev.created_at), event_id=ev.id)

    def cancel(self, handle: JobHandle) -> None:
        if handle.external_id:
            self.client.fine_tuning.jobs.cancel(handle.external_id)


def follow(store: JobStore, files: FileStore, job: dict[str, Any], interval: float | None = None) -> None:
    """The worker's loop for an OpenAI job: launch once, then poll until it ends."""
    interval = interval if interval is not None else float(os.environ.get("TUNELOOP_OPENAI_POLL_S", "10"))
    backend = OpenAIBackend(make_client((job.get("method") or {}).get("_openai")), store, files)
    try:
        handle = (JobHandle(job["id"], "openai", external_id=job["external_id"]) if job.get("external_id")
                  else backend.launch(job))
    except openai.APIStatusError as exc:
        _fail(store, job["id"], exc.message, str(exc.code or "invalid_request"), "training_file")
        return
    while True:
        if store.cancel_requested(job["id"]):
            backend.cancel(handle)
            store.add_event(job["id"], f"Cancelled the OpenAI job {handle.external_id}")
            return
        info = backend.poll(handle)
        if isinstance(info, Succeeded):
            _succeed(store, job, info)
            return
        if isinstance(info, Failed):
            if info.cancelled:
                store.finish(job["id"], "cancelled")
            else:
                _fail(store, job["id"], info.message, info.code, info.param)
            return
        if store.get(job["id"])["status"] != info.status:  # type: ignore[index]
            store.update(job["id"], status=info.status)
        time.sleep(interval)


def _fail(store: JobStore, job_id: str, message: str, code: str, param: str | None) -> None:
    if store.finish(job_id, "failed", error={"code": code, "message": message, "param": param}):
        store.add_event(job_id, f"OpenAI fine-tuning failed: {message}", level="error")


def _succeed(store: JobStore, job: dict[str, Any], info: Succeeded) -> None:
    if store.finish(job["id"], "succeeded", fine_tuned_model=info.fine_tuned_model,
                    trained_tokens=info.trained_tokens):
        store.register_adapter(info.fine_tuned_model, job["model"], None, job["id"],
                               {"trained_tokens": info.trained_tokens})
        store.add_event(job["id"], f"New fine-tuned model available: {info.fine_tuned_model}")
