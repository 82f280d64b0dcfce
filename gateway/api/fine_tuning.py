"""OpenAI's fine-tuning jobs API (thin router; the job queue in gateway.job_queue).

POST /v1/fine_tuning/jobs                       ``CreateFineTuningJobRequest`` -> ``FineTuningJob``
GET  /v1/fine_tuning/jobs                       ?after, limit, metadata[k]=v -> ``ListPaginatedFineTuningJobsResponse``
GET  /v1/fine_tuning/jobs/{id}                  -> ``FineTuningJob``
GET  /v1/fine_tuning/jobs/{id}/events           ?after, limit -> ``ListFineTuningJobEventsResponse``
GET  /v1/fine_tuning/jobs/{id}/checkpoints      ?after, limit -> ``ListFineTuningJobCheckpointsResponse``
POST /v1/fine_tuning/jobs/{id}/cancel           -> ``FineTuningJob`` (409 once it ended)

A ``model`` of the base-model catalog (the config's ``base_models``, and the embedded
``smollm2-135m-instruct``) trains a local LoRA adapter in a worker process; any
other model goes to OpenAI through the config's first target of kind ``openai`` (its
``base_url`` and ``api_key_env``), else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``. The
request returns at once with ``validating_files``: the job is a row of the queue, which the
training side's runner (``adapters.training.runner``, a child of ``tuneloop serve``) hands
to a worker; the worker moves the job on. This module never imports the training code.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.fine_tuning_wire import checkpoint_object, event_object, job_object, page
from gateway.api.paging import page_limit
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.job_queue import JobError, JobFinished, JobNotFound, cancel_job, create_job
from gateway.store.jobs import JobStore

router = APIRouter(tags=["fine-tuning"])


class CreateJobRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2147483647)
    metadata: dict[str, str] | None = None
    hyperparameters: dict[str, Any] | None = None  # deprecated by OpenAI: method.<type>.hyperparameters
    method: dict[str, Any] | None = None
    integrations: list[dict[str, Any]] | None = None  # accepted, not used (no wandb here)


def _engine(request: Request) -> Any:
    return request.app.state.log.engine


def _openai_target(request: Request) -> dict[str, Any] | None:
    config = request.app.state.routes.config
    for target in config.targets.values():
        if target.kind == "openai":
            return {"base_url": target.base_urls[0], "api_key_env": target.api_key_env}
    return None


def _job(request: Request, job_id: str) -> dict[str, Any]:
    row = JobStore(_engine(request)).get(job_id, getattr(request.state, "project", None))
    if row is None:
        raise NotFound(f"Fine-tuning job {job_id} not found.", param="fine_tuning_job_id")
    return row


@router.post("/v1/fine_tuning/jobs")
async def create(body: CreateJobRequest, request: Request) -> dict[str, Any]:
    try:
        row = await asyncio.to_thread(
            create_job, _engine(request), model=body.model, training_file=body.training_file,
            validation_file=body.validation_file, method=body.method, hyperparameters=body.hyperparameters,
            suffix=body.suffix, seed=body.seed, metadata=body.metadata, openai=_openai_target(request),
            project=getattr(request.state, "project", None), config=request.app.state.routes.config)
    except JobError as exc:
        raise InvalidRequest(str(exc), param=exc.param, code=exc.code) from None
    return job_object(row)


@router.get("/v1/fine_tuning/jobs")
async def list_jobs(request: Request, limit: Annotated[int, page_limit(20)],
                    after: str | None = None) -> dict[str, Any]:
    # metadata[key]=value, as the SDK sends ``metadata={"key": "value"}``
    meta = {k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")}
    rows, more = await asyncio.to_thread(JobStore(_engine(request)).list, after, limit, meta or None,
                                         getattr(request.state, "project", None))
    return page([job_object(r) for r in rows], more)


@router.get("/v1/fine_tuning/jobs/{job_id}")
async def retrieve(job_id: str, request: Request) -> dict[str, Any]:
    return job_object(await asyncio.to_thread(_job, request, job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
async def events(job_id: str, request: Request, limit: Annotated[int, page_limit(20)],
                 after: str | None = None) -> dict[str, Any]:
    await asyncio.to_thread(_job, request, job_id)
    rows, more = await asyncio.to_thread(JobStore(_engine(request)).events, job_id, after, limit)
    return page([event_object(r) for r in rows], more)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
async def checkpoints(job_id: str, request: Request, limit: Annotated[int, page_limit(10)],
                      after: str | None = None) -> dict[str, Any]:
    await asyncio.to_thread(_job, request, job_id)
    rows, more = await asyncio.to_thread(JobStore(_engine(request)).checkpoints, job_id, after, limit)
    return page([checkpoint_object(r) for r in rows], more, ids=True)


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> dict[str, Any]:
    await asyncio.to_thread(_job, request, job_id)  # 404 for another project's job
    try:
        row = await asyncio.to_thread(cancel_job, _engine(request), job_id)
    except JobNotFound:
        raise NotFound(f"Fine-tuning job {job_id} not found.", param="fine_tuning_job_id") from None
    except JobFinished as exc:
        raise Conflict(str(exc)) from None
    return job_object(row)
