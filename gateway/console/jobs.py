"""Fine-tuning jobs, ``/ui/jobs``: status, hyperparameters, events, checkpoints and a live loss curve.

GET  /ui/jobs                 the project's jobs, newest first (keyset pages, as ``GET /v1/fine_tuning/jobs``)
GET  /ui/jobs/{id}            one job; its loss curve is an inline SVG drawn here from its metrics events
GET  /ui/jobs/{id}/curve      the curve and the status alone: console.js fetches it every few seconds while
                              the job runs (same origin) and swaps it in; without script, reload the page
POST /ui/jobs/{id}/cancel     cancel it, through ``POST /v1/fine_tuning/jobs/{id}/cancel``'s code

Jobs are read as the API reads them (``JobStore``, by project: another project's job is not found).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response

from gateway.api.fine_tuning_wire import hyperparameters_of, method_of
from gateway.console import curve, render
from gateway.console.pages import ConsoleRoute, _context, _go, _log, _posting
from gateway.console.session import Viewer, keep, viewer
from gateway.errors import NotFound
from gateway.job_queue import JobFinished, JobNotFound, cancel_job
from gateway.store import workbench
from gateway.store.jobs import TERMINAL, JobStore

router = APIRouter(route_class=ConsoleRoute)
PAGE_ROWS = 30
REFRESH_S = 3


@router.get("/jobs")
async def jobs_page(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    context = await _context(request, who)
    after = request.query_params.get("after") or None
    rows, more = await asyncio.to_thread(JobStore(_log(request).engine).list, after, PAGE_ROWS, None, who.project)
    older = "?" + urlencode({"after": rows[-1]["id"]}) if more and rows else None
    return keep(request, render.page("jobs.html", **context, nav="jobs", rows=rows, older=older,
                                     paged=after is not None, terminal=TERMINAL), who)


async def _job(request: Request, who: Viewer, job_id: str) -> dict[str, Any]:
    row = await asyncio.to_thread(JobStore(_log(request).engine).get, job_id, who.project)
    if row is None:
        raise NotFound(f"No fine-tuning job with id '{job_id}' in this project.")
    return row


async def _curve(request: Request, job_id: str) -> dict[str, Any]:
    points = await asyncio.to_thread(workbench.loss_points, _log(request).engine, job_id)
    return curve.loss_curve(points)


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    context = await _context(request, who)
    row = await _job(request, who, job_id)
    store = JobStore(_log(request).engine)
    events, more_events = await asyncio.to_thread(store.events, job_id, None, 100)
    checkpoints, _ = await asyncio.to_thread(store.checkpoints, job_id, None, 20)
    method = method_of(row)
    notice = {"1": "Cancelled.", "0": "The job had already ended."}.get(request.query_params.get("cancelled") or "")
    return keep(request, render.page(
        "job.html", **context, nav="jobs", row=row, method=method, hyperparameters=hyperparameters_of(method),
        events=events, more_events=more_events, checkpoints=checkpoints, curve=await _curve(request, job_id),
        running=row["status"] not in TERMINAL, refresh_s=REFRESH_S, notice=notice), who)


@router.get("/jobs/{job_id}/curve")
async def job_curve(job_id: str, request: Request) -> Response:
    who = await viewer(request)
    if who is None:
        raise NotFound("Sign in first.")
    row = await _job(request, who, job_id)
    response = render.page("loss_curve.html", curve=await _curve(request, job_id), row=row,
                           running=row["status"] not in TERMINAL)
    response.headers["x-job-status"] = row["status"]
    return response


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> Response:
    who, _ = await _posting(request)
    await _job(request, who, job_id)  # 404 for another project's job
    try:
        await asyncio.to_thread(cancel_job, _log(request).engine, job_id)
    except JobNotFound:
        raise NotFound(f"No fine-tuning job with id '{job_id}' in this project.") from None
    except JobFinished:
        return _go(f"/ui/jobs/{quote(job_id)}?cancelled=0")
    return _go(f"/ui/jobs/{quote(job_id)}?cancelled=1")
