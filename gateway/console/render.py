"""Pages from the package's Jinja2 templates, and its two static files, with the headers every page
carries: a Content-Security-Policy that lets a page load and send nothing but to this gateway (no
inline script, no other origin), no caching of pages (they show a project's data), no framing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Response
from fastapi.responses import HTMLResponse

from gateway.console import views

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"content-security-policy": CSP, "cache-control": "no-store", "x-frame-options": "DENY",
           "x-content-type-options": "nosniff", "referrer-policy": "same-origin"}
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
STATIC = {p.name: p.read_bytes() for p in (HERE / "static").iterdir() if p.suffix in TYPES}
VERSIONS = {name: hashlib.sha256(body).hexdigest()[:12] for name, body in STATIC.items()}

env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
env.filters.update(usd=views.usd, seconds=views.seconds, when=views.when, iso=views.iso, tokens=views.tokens,
                   rating=views.rating)
env.globals["static"] = lambda name: f"/ui/static/{name}?v={VERSIONS[name]}"


def page(template: str, code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context``, answered with HTTP status ``code``."""
    html = env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=code, headers=HEADERS)


def static(name: str) -> Response:
    """One of the package's static files (anything else: 404); cached for a day (its URL has its hash)."""
    body = STATIC.get(name)
    if body is None:
        return Response(status_code=404, headers=HEADERS)
    return Response(body, media_type=TYPES[Path(name).suffix],
                    headers={"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"})
