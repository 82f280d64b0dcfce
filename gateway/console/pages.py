"""The console's routes, under ``/ui/`` (see gateway/console/__init__.py for the whole picture).

GET  /ui/signin                      the sign-in form (an API key)         POST: sign in
POST /ui/signout                     end the session
POST /ui/project                     an admin chooses the project to look at (empty: all)
GET  /ui/                            traffic: interactions newest first, filtered, a page at a time
GET  /ui/completions/{id}            one interaction: conversation, reply, route, usage, feedback
POST /ui/completions/{id}/feedback   rating, correction, comment, tags: through POST /v1/feedback's code
GET  /ui/static/{name}               the stylesheet and the script

Every POST carries the session's CSRF token. A gateway error becomes an HTML page with its status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from gateway.api.deps import count_write
from gateway.api.feedback import save_feedback
from gateway.asgi import read_body
from gateway.console import correction, render, views
from gateway.console.session import (
    COOKIE,
    SIGNIN_COOKIE,
    Viewer,
    check_csrf,
    keep,
    keyless,
    set_cookie,
    signin_token,
    viewer,
)
from gateway.errors import AuthenticationFailed, GatewayError, PermissionDenied
from gateway.log.service import LogService
from gateway.store import sessions, traffic

MAX_FORM = 256 * 1024  # a correction's 64k characters, escaped, with room to spare
PAGE_ROWS = 50


class ConsoleRoute(APIRoute):
    """A route whose gateway errors are pages (with the status the API would give), not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except GatewayError as exc:
                who = getattr(request.state, "viewer", None)
                return render.page("error.html", exc.status_code, who=who, status=exc.status_code,
                                   message=exc.message, projects=getattr(request.state, "projects", []))

        return guarded


router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


def _log(request: Request) -> LogService:
    return request.app.state.log


def _go(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _form(request: Request) -> dict[str, str]:
    body = await read_body(request.scope, request.receive, MAX_FORM)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def _posting(request: Request, *, counted: bool = True) -> tuple[Viewer, dict[str, str]]:
    """The viewer of a POST and its form, once the CSRF token checks out (else 403). A write counts against
    the key's ``rpm`` as the API's writes do (429 past it; ``counted=False``: signing out always works)."""
    who = await viewer(request)
    if who is None:
        raise PermissionDenied("Sign in first: this session has ended.")
    request.state.viewer = who
    form = await _form(request)
    check_csrf(request, who.csrf, form.get("csrf"))
    if counted:
        await count_write(request, who.principal)
    return who, form


async def _context(request: Request, who: Viewer) -> dict[str, Any]:
    """What the layout needs: the viewer, and for an admin the projects to switch between."""
    request.state.viewer = who
    projects = await asyncio.to_thread(sessions.projects, _log(request).engine) if who.principal.admin else []
    request.state.projects = projects  # for an error page, should one follow
    return {"who": who, "projects": projects}


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return render.static(name)


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    if await keyless(request) is not None:
        return _go("/ui/")
    return _signin_page(request, 200, None)


def _signin_page(request: Request, status: int, error: str | None) -> Response:
    token = signin_token(request)
    response = render.page("signin.html", status, who=None, csrf=token, error=error)
    set_cookie(request, response, SIGNIN_COOKIE, token, 3600)
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await _form(request)
    check_csrf(request, request.cookies.get(SIGNIN_COOKIE) or "", form.get("csrf"))
    secret = form.get("api_key", "").strip()
    try:
        principal = await request.app.state.auth.principal(f"Bearer {secret}") if secret else None
    except AuthenticationFailed:
        principal = None
    if principal is None:
        return _signin_page(request, 401, "That API key is not valid (unknown, revoked or expired).")
    if principal.key_id is None:  # the gateway asks for no key
        return _go("/ui/")
    session_id = await asyncio.to_thread(sessions.start, _log(request).engine, principal.key_id)
    response = _go("/ui/")
    set_cookie(request, response, COOKIE, session_id, int(sessions.LIFETIME_S))
    response.delete_cookie(SIGNIN_COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    who, _ = await _posting(request, counted=False)
    await asyncio.to_thread(sessions.end, _log(request).engine, who.session_id)
    response = _go("/ui/signin")
    response.delete_cookie(COOKIE, path="/ui", secure=request.url.scheme == "https", httponly=True,
                           samesite="strict")
    return response


@router.post("/project")
async def choose_project(request: Request) -> Response:
    who, form = await _posting(request)
    if not who.principal.admin:
        raise PermissionDenied("Only an admin key can look at other projects.")
    await asyncio.to_thread(sessions.choose_project, _log(request).engine, who.session_id,
                            form.get("project") or None)
    return _go("/ui/")


@router.get("/")
async def traffic_page(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    context = await _context(request, who)
    query = dict(request.query_params)
    log = _log(request)
    await log.sync()  # what was just answered shows
    found = await asyncio.to_thread(traffic.page, log.engine, views.traffic_filter(query, who.project),
                                    after=query.get("after") or None, limit=PAGE_ROWS)
    shown = {k: v for k, v in query.items() if k in views.FILTERS and v}
    older = "?" + urlencode({**shown, "after": found.older}) if found.older else None
    response = render.page("traffic.html", **context, rows=found.rows, older=older, shown=shown,
                           searched_to=found.searched_to, scan_rows=traffic.scan_rows(log.engine),
                           filters={k: query.get(k, "") for k in views.FILTERS},
                           paged="after" in query, ratings=views.RATINGS,
                           models=sorted(request.app.state.routes.config.models))
    return keep(request, response, who)


@router.get("/completions/{completion_id}")
async def completion_page(completion_id: str, request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    saved = request.query_params.get("saved")
    notice = {"1": "Saved.", "0": "Nothing changed: nothing was saved."}.get(saved or "")
    return keep(request, await _completion(request, who, completion_id, notice=notice), who)


async def _completion(request: Request, who: Viewer, completion_id: str, *, status: int = 200,
                      notice: str | None = None, error: str | None = None) -> Response:
    context = await _context(request, who)
    log = _log(request)
    await log.sync()
    row = await asyncio.to_thread(traffic.interaction, log.engine, completion_id, who.tenancy)
    if row is None:
        return render.page("error.html", 404, **context, status=404,
                           message=f"No interaction with id '{completion_id}' in this project.")
    replies = views.replies(row["response"])
    summary = row["feedback"]
    return render.page(
        "completion.html", status, **context, row=row, conversation=views.conversation(row["request"]),
        replies=replies, options=views.request_options(row["request"]), summary=summary,
        **correction.boxes(summary, replies, row["request"]), comment=summary["comment"] or "",
        tags=views.tags_text(summary["tags"]), error=error, notice=notice,
        error_detail=row["error"], can_rate=row["status"] == 200 and row["response"] is not None)


@router.post("/completions/{completion_id}/feedback")
async def save(completion_id: str, request: Request) -> Response:
    who, form = await _posting(request)
    log = _log(request)
    row = await asyncio.to_thread(traffic.interaction, log.engine, completion_id, who.tenancy)
    if row is None:
        return await _completion(request, who, completion_id)  # the not-found page
    try:
        body = correction.feedback_body(form, row)
        if body is None:
            return _go(f"/ui/completions/{quote(completion_id)}?saved=0")
        await save_feedback(log, body, who.tenancy)  # POST /v1/feedback's own path
    except GatewayError as exc:
        return await _completion(request, who, completion_id, status=exc.status_code, error=exc.message)
    return _go(f"/ui/completions/{quote(completion_id)}?saved=1")
