"""A loopback server that follows OpenAI's Files and fine-tuning jobs API.

* ``POST /v1/files`` (multipart ``file`` + ``purpose``), ``GET /v1/files/{id}``.
* ``POST /v1/fine_tuning/jobs``: the training file must exist (404 otherwise, like OpenAI).
  Each ``GET /v1/fine_tuning/jobs/{id}`` moves the job one state on:
  ``validating_files -> queued -> running -> succeeded``, adding events (a ``metrics`` event
  while running) and finally ``fine_tuned_model = ft:<model>:tuneloop-test:<suffix>:<id>``.
  A training file with a line that is not JSON, or has neither ``messages`` nor ``input``,
  fails the job at validation with the line number, as OpenAI does.
* ``GET .../events`` (newest first, ``after``, ``limit``), ``POST .../cancel``.
* ``GET /_requests``: what it received (method, path, JSON body or form fields).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fakes.threaded import ThreadedServer

STATES = ["validating_files", "queued", "running", "succeeded"]


def _err(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": None}}, status_code=status)


def _bad_line(content: bytes) -> str | None:
    for n, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            return f"Invalid file format. Line {n} is not valid JSON."
        if not isinstance(obj, dict) or not ("messages" in obj or "input" in obj):
            return f"Invalid file format. Line {n}, key \"messages\": example is missing messages."
    return None


class State:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.content: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []

    def event(self, job_id: str, message: str, type_: str = "message", data: dict[str, Any] | None = None,
              level: str = "info") -> None:
        self.events[job_id].append({"object": "fine_tuning.job.event", "id": "ftevent-" + secrets.token_hex(8),
                                    "created_at": int(time.time()), "level": level, "message": message,
                                    "type": type_, "data": data or {}})

    def advance(self, job: dict[str, Any]) -> None:
        if job["status"] not in STATES[:-1]:
            return
        if job["status"] == "validating_files":
            problem = _bad_line(self.content[job["training_file"]])
            if problem:
                job.update(status="failed", finished_at=int(time.time()),
                           error={"code": "invalid_training_file", "message": problem, "param": "training_file"})
                self.event(job["id"], problem, level="error")
                return
        job["status"] = STATES[STATES.index(job["status"]) + 1]
        if job["status"] == "running":
            self.event(job["id"], "Fine-tuning job started")
            self.event(job["id"], "Step 1/1: training loss=0.42", "metrics", {"step": 1, "train_loss": 0.42})
        elif job["status"] == "succeeded":
            tail = job["id"][-8:]
            job.update(fine_tuned_model=f"ft:{job['model']}:tuneloop-test:{job['suffix'] or 'x'}:{tail}",
                       finished_at=int(time.time()), trained_tokens=1234)
            self.event(job["id"], f"New fine-tuned model created: {job['fine_tuned_model']}")
            self.event(job["id"], "The job has successfully completed")
        else:
            self.event(job["id"], f"Job {job['status']}")


def make_app(state: State) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/files")
    async def upload(request: Request) -> Any:
        form = await request.form()  # Starlette's parser, as OpenAI's own would read it
        upload, purpose = form["file"], str(form["purpose"])
        filename, content = upload.filename, await upload.read()
        state.requests.append({"method": "POST", "path": "/v1/files", "purpose": purpose, "filename": filename})
        fid = "file-" + secrets.token_hex(8)
        state.content[fid] = content
        state.files[fid] = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                            "filename": filename or "upload", "purpose": purpose, "status": "processed"}
        return state.files[fid]

    @app.get("/v1/files/{fid}")
    async def get_file(fid: str) -> Any:
        return state.files.get(fid) or _err(404, f"No such File object: {fid}", "id")

    @app.post("/v1/fine_tuning/jobs")
    async def create(request: Request) -> Any:
        body = await request.json()
        state.requests.append({"method": "POST", "path": "/v1/fine_tuning/jobs", "body": body})
        if body.get("training_file") not in state.files:
            return _err(404, f"Invalid file ID: {body.get('training_file')}", "training_file")
        jid = "ftjob-" + secrets.token_hex(10)
        method = body.get("method") or {"type": "supervised"}
        state.jobs[jid] = {
            "object": "fine_tuning.job", "id": jid, "model": body["model"], "created_at": int(time.time()),
            "finished_at": None, "fine_tuned_model": None, "organization_id": "org-test", "result_files": [],
            "status": "validating_files", "validation_file": body.get("validation_file"),
            "training_file": body["training_file"], "hyperparameters": {"n_epochs": "auto"},
            "trained_tokens": None, "error": None, "seed": body.get("seed") or 0, "method": method,
            "suffix": body.get("suffix"), "metadata": body.get("metadata"), "estimated_finish": None,
            "integrations": None,
        }
        state.events[jid] = []
        state.event(jid, f"Created fine-tuning job: {jid}")
        return _public(state.jobs[jid])

    @app.get("/v1/fine_tuning/jobs/{jid}")
    async def retrieve(jid: str) -> Any:
        if jid not in state.jobs:
            return _err(404, f"No such fine-tuning job: {jid}")
        state.advance(state.jobs[jid])
        return _public(state.jobs[jid])

    @app.get("/v1/fine_tuning/jobs/{jid}/events")
    async def events(jid: str, after: str | None = None, limit: int = 20) -> Any:
        evs = list(reversed(state.events.get(jid, [])))
        if after:
            ids = [e["id"] for e in evs]
            evs = evs[ids.index(after) + 1:] if after in ids else []
        return {"object": "list", "data": evs[:limit], "has_more": len(evs) > limit}

    @app.post("/v1/fine_tuning/jobs/{jid}/cancel")
    async def cancel(jid: str) -> Any:
        state.requests.append({"method": "POST", "path": f"/v1/fine_tuning/jobs/{jid}/cancel"})
        job = state.jobs[jid]
        job["status"] = "cancelled"
        state.event(jid, "Job cancelled")
        return _public(job)

    @app.get("/_requests")
    async def requests() -> Any:
        return state.requests

    return app


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "suffix"}


class FakeFineTuning(ThreadedServer):
    """Runs the fake in a background thread on a loopback port."""

    def __init__(self, port: int) -> None:
        self.state = State()
        super().__init__(make_app(self.state), port)
