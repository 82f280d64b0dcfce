"""Who is looking at the console: the session cookie, the CSRF token, the principal.

The cookie (``COOKIE``) carries a random session id and nothing else: ``HttpOnly``, ``SameSite=Strict``,
``Path=/ui``, and ``Secure`` when the request came over https. The session row (gateway.store.sessions)
names the API key by id; the key itself is read once, from the sign-in form, checked by the same
``Authenticator`` as the API, and never kept, logged or sent back.

When the gateway asks for no key (auth off: the local admin; or loopback before the first key: the
``default`` project, as on the API), the console opens without sign-in; a session is still made on the
first page, for its CSRF token. Every POST must carry the session's token (form field ``csrf`` or
header ``X-CSRF-Token``); the sign-in form, before any session, carries a token that must match a
cookie of its own (``SIGNIN_COOKIE``, double submit).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request, Response

from gateway.auth import Principal, project_of
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.store import sessions

COOKIE = "tuneloop_console"
SIGNIN_COOKIE = "tuneloop_signin"


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    session_id: str
    csrf: str
    chosen: str | None  # the project an admin chose (None: every project)
    signed_in: bool  # with a key (False: the gateway asks for none, so there is no signing out)
    fresh: bool = False  # the session was made for this request: its cookie must be set

    @property
    def project(self) -> str | None:
        """The tenancy filter for reads: the key's project, or for an admin the one chosen (None: all)."""
        return self.chosen if self.principal.admin else self.principal.project

    @property
    def tenancy(self) -> str | None:
        """The project one interaction is read from and feedback written to, as on the API (admins: any)."""
        return project_of(self.principal)


async def keyless(request: Request) -> Principal | None:
    """The principal when the gateway asks for no key (auth off, or loopback with none yet), else None."""
    try:
        return await request.app.state.auth.principal(None)
    except AuthenticationFailed:
        return None


async def viewer(request: Request, *, may_start: bool = False) -> Viewer | None:
    """The viewer of this request, or None (sign-in needed). ``may_start``: a keyless gateway starts a
    session here when there is none (GET pages only: a POST needs the token of an existing one)."""
    engine = request.app.state.log.engine
    session_id = request.cookies.get(COOKIE)
    found = await asyncio.to_thread(sessions.load, engine, session_id) if session_id else None
    anonymous = await keyless(request)
    if anonymous is not None:
        if found is not None and session_id is not None:
            return Viewer(anonymous, session_id, found.csrf, found.project, signed_in=False)
        if not may_start:
            return None
        session_id = await asyncio.to_thread(sessions.start, engine, None)
        found = await asyncio.to_thread(sessions.load, engine, session_id)
        assert found is not None
        return Viewer(anonymous, session_id, found.csrf, None, signed_in=False, fresh=True)
    if found is None or found.key is None or session_id is None:
        return None
    key = found.key
    return Viewer(Principal(key["id"], key["project"], key["admin"], key["limits"]), session_id, found.csrf,
                  found.project, signed_in=True)


def check_csrf(request: Request, expected: str, sent: str | None) -> None:
    """PermissionDenied (403) unless ``sent`` (the form's field, else the header) is ``expected``."""
    token = sent or request.headers.get("x-csrf-token") or ""
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise PermissionDenied("The form's CSRF token is missing or wrong: reload the page and try again.")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/ui", secure=request.url.scheme == "https",
                        httponly=True, samesite="strict")


def keep(request: Request, response: Response, who: Viewer) -> Response:
    """Set the session cookie on ``response`` when the session was made for this request."""
    if who.fresh:
        set_cookie(request, response, COOKIE, who.session_id, int(sessions.LIFETIME_S))
    return response


def signin_token(request: Request) -> str:
    """The sign-in form's CSRF token: the one its cookie already holds, or a new one."""
    return request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)
