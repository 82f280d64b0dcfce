"""FastAPI dependencies: who is calling (and the project their reads are scoped to).

Every request that writes (any method but GET, HEAD, OPTIONS: feedback, file uploads,
fine-tuning jobs, stored-completion updates and deletes, admin writes) counts against the
key's ``rpm`` through the same limiter as chat completions (``Limiter.admit``), so one
budget of requests per minute covers a key's traffic of every kind. Only ``rpm`` applies
here: token and USD budgets are about model calls.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request, Response

from gateway.auth import Principal, project_of, require_admin
from gateway.ratelimit import Ask

READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticated(request: Request, response: Response) -> Principal:
    principal = await request.app.state.auth.principal(request.headers.get("authorization"))
    request.state.principal = principal
    request.state.project = project_of(principal)  # the log routers scope reads by this
    rpm = principal.limits.get("rpm")
    if rpm and request.method not in READS:
        limiter = request.app.state.limiter
        reservation = await limiter.admit(replace(principal, limits={"rpm": rpm}), Ask())
        await limiter.settle(reservation, 0, 0.0)  # a write uses no tokens: only the request counts
        for name, value in reservation.headers:
            response.headers[name.decode()] = value.decode()
    return principal


async def admin(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    return require_admin(principal)


CallerDep = Annotated[Principal, Depends(authenticated)]
AdminDep = Annotated[Principal, Depends(admin)]
