"""FastAPI dependencies: who is calling (and the project their reads are scoped to)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Principal, project_of, require_admin


async def authenticated(request: Request) -> Principal:
    principal = await request.app.state.auth.principal(request.headers.get("authorization"))
    request.state.principal = principal
    request.state.project = project_of(principal)  # the log routers scope reads by this
    return principal


async def admin(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    return require_admin(principal)


CallerDep = Annotated[Principal, Depends(authenticated)]
AdminDep = Annotated[Principal, Depends(admin)]
