"""Datasets, ``/ui/datasets``: the sets built from the log, building one, and starting a job from one.

GET  /ui/datasets                  the built sets (filters, size, when), the builds in progress, the build form
POST /ui/datasets                  build one: ``tuneloop dataset build`` in a child process (console.building)
GET  /ui/datasets/{id}             one set: its filters, build or validation report, the first lines as chat
POST /ui/datasets/{id}/jobs        a fine-tuning job on it, through ``POST /v1/fine_tuning/jobs``'s code
                                   (``gateway.job_queue.create_job``): queued for the training side's runner

A project key sees and builds from its own project's traffic only; an admin the project chosen (or all).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from gateway.catalog import catalog
from gateway.console import render, views
from gateway.console.building import BuildRequest, Builds
from gateway.console.pages import ConsoleRoute, _context, _go, _log, _posting
from gateway.console.session import Viewer, keep, viewer
from gateway.errors import InvalidRequest, NotFound
from gateway.job_queue import JobError, create_job
from gateway.store import workbench

router = APIRouter(route_class=ConsoleRoute)
PREVIEW_LINES = 5
FORMATS = {"sft": "SFT (chat)", "dpo": "DPO (preference pairs)", "prompt_completion": "prompt-completion (legacy)"}
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def builds(request: Request) -> Builds:
    state = request.app.state
    if not hasattr(state, "dataset_builds"):
        state.dataset_builds = Builds()
    return state.dataset_builds


async def _signed_in(request: Request) -> Viewer | None:
    return await viewer(request, may_start=True)


@router.get("/datasets")
async def datasets_page(request: Request) -> Response:
    who = await _signed_in(request)
    if who is None:
        return _go("/ui/signin")
    context = await _context(request, who)
    rows = await asyncio.to_thread(workbench.datasets_of, _log(request).engine, who.project)
    started = request.query_params.get("build")
    return keep(request, render.page(
        "datasets.html", **context, nav="datasets", rows=rows, builds=builds(request).listed(who.project),
        started=builds(request).get(started, who.project) if started else None, formats=FORMATS,
        models=sorted(request.app.state.routes.config.models)), who)


def _build_request(form: dict[str, str], who: Viewer) -> BuildRequest:
    fmt = form.get("format") or "sft"
    if fmt not in FORMATS:
        raise InvalidRequest(f"'format' is one of {', '.join(FORMATS)}.", param="format")
    rating = (form.get("min_rating") or "").strip()
    try:
        min_rating = float(rating) if rating else None
    except ValueError:
        raise InvalidRequest("'min_rating' is a number between -1 and 1.", param="min_rating") from None
    if min_rating is not None and not -1 <= min_rating <= 1:
        raise InvalidRequest("'min_rating' is a number between -1 and 1.", param="min_rating")
    name = (form.get("name") or "").strip()[:200] or f"{form.get('model') or 'all'}-{fmt}"
    return BuildRequest(fmt=fmt, name=name, model=(form.get("model") or "").strip() or None, project=who.project,
                        since=form.get("since") or None, until=form.get("until") or None, min_rating=min_rating,
                        has_correction=form.get("has_correction") == "on")


@router.post("/datasets")
async def build(request: Request) -> Response:
    who, form = await _posting(request)
    wanted = _build_request(form, who)
    state = request.app.state
    from gateway.settings import database_url  # the gateway's own, as `tuneloop serve` starts its runner with

    settings, config = state.settings, state.routes.file_config
    home = Path(settings.resolved_home()).resolve()
    env = {"TUNELOOP_HOME": str(home), "TUNELOOP_DATABASE_URL": database_url(settings, config)}
    if settings.config is not None:
        env["TUNELOOP_CONFIG"] = str(Path(settings.config).resolve())
    started = builds(request).start(wanted, home, env)
    return _go(f"/ui/datasets?build={quote(started.id)}")


def _preview(row: dict[str, Any], limit: int = PREVIEW_LINES) -> tuple[list[dict[str, Any]], bool]:
    """The set's first lines, the training file's then the validation file's (a set too small for both may
    hold all its lines in either), each as the bubbles of its conversation (DPO: the preferred reply, then the
    other); and whether either file could be read here."""
    import orjson

    out: list[dict[str, Any]] = []
    readable = False
    for split, path in (("train", row.get("path")), ("validation", row.get("val_path"))):
        if not path or not os.path.isfile(path):
            continue
        readable = True
        with open(path, "rb") as f:
            for raw in f:
                if len(out) >= limit:
                    return out, readable
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    out.append({"split": split, "bubbles": [views.bubble({"role": "error", "content": "(not JSON)"})]})
                    continue
                out.append({"split": split, "bubbles": _line_bubbles(line if isinstance(line, dict) else {})})
    return out, readable


def _line_bubbles(line: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" in line:
        return [views.bubble(m) for m in line["messages"] or []]
    if "input" in line:
        shown = [views.bubble(m) for m in (line["input"] or {}).get("messages") or []]
        shown += [{**views.bubble(m), "kind": "preferred"} for m in line.get("preferred_output") or []]
        return shown + [{**views.bubble(m), "kind": "rejected"} for m in line.get("non_preferred_output") or []]
    return [views.bubble({"role": "prompt", "content": str(line.get("prompt", ""))}),
            views.bubble({"role": "assistant", "content": str(line.get("completion", ""))})]


async def _dataset(request: Request, who: Viewer, dataset_id: str) -> dict[str, Any]:
    row = await asyncio.to_thread(workbench.dataset, _log(request).engine, dataset_id, who.project)
    if row is None:
        raise NotFound(f"No dataset with id '{dataset_id}' in this project.")
    return row


@router.get("/datasets/{dataset_id}")
async def dataset_page(dataset_id: str, request: Request) -> Response:
    who = await _signed_in(request)
    if who is None:
        return _go("/ui/signin")
    return keep(request, await _dataset_view(request, who, dataset_id), who)


async def _dataset_view(request: Request, who: Viewer, dataset_id: str, *, status: int = 200,
                        error: str | None = None) -> Response:
    context = await _context(request, who)
    row = await _dataset(request, who, dataset_id)
    preview, readable = await asyncio.to_thread(_preview, row)
    bases = sorted(catalog(request.app.state.routes.config))
    return render.page("dataset.html", status, **context, nav="datasets", row=row, preview=preview, readable=readable,
                       report=row.get("report") or {}, bases=bases, error=error,
                       method="dpo" if row["kind"] == "dpo" else "supervised")


@router.post("/datasets/{dataset_id}/jobs")
async def start_job(dataset_id: str, request: Request) -> Response:
    who, form = await _posting(request)
    row = await _dataset(request, who, dataset_id)
    config = request.app.state.routes.config
    method = "dpo" if row["kind"] == "dpo" else "supervised"
    hyperparameters = {k: _number(form.get(k, ""), k) for k in HYPERPARAMETERS if form.get(k, "").strip()}
    try:
        job = await asyncio.to_thread(
            create_job, _log(request).engine, model=form.get("model") or "", dataset_id=row["id"],
            method={"type": method, method: {"hyperparameters": hyperparameters}},
            suffix=(form.get("suffix") or "").strip() or None,
            project=row["project"] if who.principal.admin else who.principal.project, config=config)
    except JobError as exc:
        return await _dataset_view(request, who, dataset_id, status=400, error=str(exc))
    return _go(f"/ui/jobs/{quote(job['id'])}")


def _number(value: str, name: str) -> int | float:
    try:
        return int(value) if value.strip().isdigit() else float(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a number.", param=name) from None
