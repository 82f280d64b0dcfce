"""Costs and latency, ``/ui/costs``: USD and tokens by day, model and project; p50/p99 latency and time to first
token per day; the error rate per day. Over a range of UTC days (``from``, ``to``: dates; or ``days`` back
from today; 14 by default, at most 366).

The sums are SQL GROUP BYs (gateway.store.costs.cost_report, as ``tuneloop costs``) down the created and
project indexes; the percentiles are computed in Python over a bounded sample (SQLite has no percentile
function: gateway.store.costs.latency_by_day). Days before yesterday are read from what was kept of them
(gateway.store.cost_days: filled on first view, dropped by a late write); today and yesterday live. Shadow
calls count in the spend and the tokens (they are paid for), not in the error rate or the latencies. A project
key sees its project; an admin every project (a table by project) or the one chosen. Charts are inline SVG
drawn here (gateway.console.charts).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.console import charts, render, views
from gateway.console.pages import ConsoleRoute, _context, _go, _log
from gateway.console.session import keep, viewer
from gateway.errors import InvalidRequest
from gateway.store import cost_days

router = APIRouter(route_class=ConsoleRoute)
DEFAULT_DAYS, MAX_DAYS = 14, 366
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd")


def day_range(query: dict[str, str], today: date | None = None) -> tuple[date, date]:
    """The first and last UTC day shown (both included)."""
    today = today or datetime.now(UTC).date()

    def parse(name: str) -> date | None:
        value = (query.get(name) or "").strip()
        try:
            return date.fromisoformat(value) if value else None
        except ValueError:
            raise InvalidRequest(f"'{name}' must be a date (YYYY-MM-DD).", param=name) from None

    days = (query.get("days") or "").strip()
    if days and not (days.isdigit() and 1 <= int(days) <= MAX_DAYS):
        raise InvalidRequest(f"'days' is a whole number from 1 to {MAX_DAYS}.", param="days")
    last = parse("to") or today
    first = parse("from") or last - timedelta(days=(int(days) if days else DEFAULT_DAYS) - 1)
    if first > last:
        raise InvalidRequest("'from' comes after 'to'.", param="from")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(f"The range is at most {MAX_DAYS} days.", param="from")
    return first, last


def _epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _sum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: sum(r[k] or 0 for r in rows) for k in SUMS}


def _grouped(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """``rows`` summed by ``key`` (``model`` or ``project``), the costliest first."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = r[key] if key != "project" else r[key] or "default"
        into = out.setdefault(name, {key: name, **dict.fromkeys(SUMS, 0)})
        for k in SUMS:
            into[k] += r[k] or 0
    return sorted(out.values(), key=lambda r: -r["cost_usd"])


def report(engine: Any, project: str | None, first: date, last: date, by_project: bool) -> dict[str, Any]:
    """Everything the page shows (synchronous: run it in a thread)."""
    span = (_epoch_day(first), _epoch_day(last), project)
    rows = cost_days.sums(engine, *span)
    latency = cost_days.latency(engine, *span)
    days = []
    for d in range(span[0], span[1] + 1):
        mine = [r for r in rows if r["day"] == d]
        primary = [r for r in mine if r["kind"] == "primary"]
        sums, answered = _sum(mine), _sum(primary)
        rate = answered["errors"] / answered["requests"] if answered["requests"] else None
        days.append({"day": (date(1970, 1, 1) + timedelta(days=d)).isoformat(), **sums, "error_rate": rate,
                     "primary": answered["requests"], "primary_errors": answered["errors"],
                     **latency.get(d, {"latency_p50": None, "latency_p99": None, "ttft_p50": None,
                                       "ttft_p99": None, "sampled": 0})})
    labels = [d["day"] for d in days]
    return {
        "days": days, "totals": _sum(rows), "models": _grouped(rows, "model"),
        "by_project": _grouped(rows, "project") if by_project else [],
        "cost_chart": charts.bars([d["cost_usd"] for d in days], labels, views.usd),
        "requests_chart": charts.bars([d["requests"] for d in days], labels, str),
        "errors_chart": charts.bars([d["error_rate"] for d in days], labels, percent),
        "latency_chart": charts.lines({"p50": [d["latency_p50"] for d in days],
                                       "p99": [d["latency_p99"] for d in days]}, labels, views.seconds),
        "ttft_chart": charts.lines({"p50": [d["ttft_p50"] for d in days],
                                    "p99": [d["ttft_p99"] for d in days]}, labels, views.seconds),
    }


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@router.get("/costs")
async def costs_page(request: Request) -> Response:
    who = await viewer(request, may_start=True)
    if who is None:
        return _go("/ui/signin")
    context = await _context(request, who)
    query = dict(request.query_params)
    first, last = day_range(query)
    log = _log(request)
    await log.sync()
    by_project = who.principal.admin and who.project is None
    data = await asyncio.to_thread(report, log.engine, who.project, first, last, by_project)
    response = render.page("costs.html", **context, **data, first=first.isoformat(), last=last.isoformat(),
                           span=(last - first).days + 1, percent=percent, quick=(7, 14, 30, 90))
    return keep(request, response, who)
