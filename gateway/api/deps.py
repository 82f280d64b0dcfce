"""FastAPI dependencies: who is calling (and the project their reads are scoped to).

Every request that writes (any method but GET, HEAD, OPTIONS: feedback, file uploads,
fine-tuning jobs, stored-completion updates and deletes, admin writes) counts against the
key's ``rpm`` through the same limiter as chat completions (``Limiter.admit``), so one
budget of requests per minute covers a key's traffic of every kind. Only ``rpm`` applies
here: token and USD budgets are about model calls. The console's writes (its forms) count the same way.
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
    if request.method not in READS:
        for name, value in await count_write(request, principal):
            response.headers[name.decode()] = value.decode()
    return principal


async def count_write(request: Request, principal: Principal) -> list[tuple[bytes, bytes]]:
    """Count one write against the key's ``rpm`` (429 past it); the rate-limit headers to send, if any.
    The console's forms count through here too (``gateway.console.pages._posting``)."""
    rpm = principal.limits.get("rpm")
    if not rpm:
        return []
    limiter = request.app.state.limiter
    reservation = await limiter.admit(replace(principal, limits={"rpm": rpm}), Ask())
    await limiter.settle(reservation, 0, 0.0)  # a write uses no tokens: only the request counts
    return list(reservation.headers)


async def admin(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    return require_admin(principal)


CallerDep = Annotated[Principal, Depends(authenticated)]
AdminDep = Annotated[Principal, Depends(admin)]
