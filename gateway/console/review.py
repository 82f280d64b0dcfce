"""The review queue, ``/ui/review``: the replies to look at (gateway.store.review says which), one at a time.

GET  /ui/review                 the newest reply in the queue (``reason``: one kind only; ``after``: past this id)
POST /ui/review/{id}            approve (rating +1), reject (rating -1) or edit (a correction), through
                                ``POST /v1/feedback``'s code, with ``metadata.review`` saying which; then the next

The buttons are plain forms and the skip a plain link; console.js adds the keys (a, r, e, n or j) from
their ``data-key``. A reviewed reply leaves the queue; skipping moves the cursor past it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from gateway.api.feedback import save_feedback
from gateway.console import correction, render, views
from gateway.console.pages import ConsoleRoute, _context, _go, _log, _posting
from gateway.console.session import Viewer, keep, viewer
from gateway.errors import GatewayError, InvalidRequest
from gateway.store import review, traffic

router = APIRouter(route_class=ConsoleRoute)
ACTIONS = {"approve": "Approved", "reject": "Rejected", "edit": "Corrected"}


def _reasons(reason: str | None) -> tuple[str, ...]:
    if not reason:
        return tuple(review.REASONS)
    if reason not in review.REASONS:
        raise InvalidRequest(f"'reason' is one of {', '.join(review.REASONS)}.", param="reason")
    return (reason,)


def _here(reason: str | None, after: str | None, **extra: str) -> str:
    query = {k: v for k, v in {"reason": reason or "", "after": after or "", **extra}.items() if v}
    return "/ui/review" + ("?" + urlencode(query) if query else "")


@router.get("/review")
async def review_page(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    query = request.query_params
    reason, after = query.get("reason") or None, query.get("after") or None
    reasons = _reasons(reason)
    done, did = query.get("done"), query.get("did")
    notice = f"{ACTIONS[did]} {done}." if done and did in ACTIONS else None
    return keep(request, await _page(request, who, reason, reasons, after, notice=notice), who)


async def _page(request: Request, who: Viewer, reason: str | None, reasons: tuple[str, ...], after: str | None,
                *, status: int = 200, notice: str | None = None, error: str | None = None) -> Response:
    context = await _context(request, who)
    log = _log(request)
    await log.sync()
    engine = log.engine
    counts = await asyncio.to_thread(review.counts, engine, who.project)
    waiting = tuple(r for r in reasons if counts[r])  # a reason with none waiting has no next one either
    found = await asyncio.to_thread(review.next_item, engine, who.project, reasons=waiting, after=after)
    item: dict[str, Any] | None = None
    if found is not None:
        row = await asyncio.to_thread(traffic.interaction, engine, found[0], who.tenancy)
        shadows = await asyncio.to_thread(review.shadows, engine, found[0])
        if row is not None:
            replies = views.replies(row["response"])
            item = {"row": row, "why": found[1], "conversation": views.conversation(row["request"]),
                    "replies": replies, **correction.boxes({"correction": None}, replies, row["request"]),
                    "shadows": [{**s, "replies": views.replies(s["response"])} for s in shadows]}
    return render.page("review.html", status, **context, item=item, counts=counts,
                       reasons=review.REASONS, reason=reason or "", after=after or "", notice=notice, error=error,
                       cap=review.COUNT_CAP, skip=_here(reason, item["row"]["id"] if item else None),
                       restart=_here(reason, None))


@router.post("/review/{completion_id}")
async def judge(completion_id: str, request: Request) -> Response:
    who, form = await _posting(request)
    reason, after = form.get("reason") or None, form.get("after") or None
    reasons = _reasons(reason)
    action = form.get("action", "")
    body: dict[str, Any] = {"completion_id": completion_id, "metadata": {review.REVIEW_KEY: action}}
    if action == "approve":
        body["rating"] = 1.0
    elif action == "reject":
        body["rating"] = -1.0
    elif action != "edit":
        raise InvalidRequest("'action' is approve, reject or edit.", param="action")
    try:
        if action == "edit":
            body["correction"] = correction.written(form)  # text, tool calls, or both
        await save_feedback(_log(request), body, who.tenancy)  # POST /v1/feedback's own path
    except GatewayError as exc:
        return await _page(request, who, reason, reasons, after, status=exc.status_code, error=exc.message)
    return _go(_here(reason, after, done=completion_id, did=action))
