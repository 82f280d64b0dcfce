"""The console over plain HTTP (httpx), as a browser would drive it: sign in with a key, keep the session
cookie, read the CSRF token from a page, post forms. For the tests of the logic behind the pages; the
browser tests check what a person sees."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from tests.fixtures.gateway import GatewayProcess

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Console:
    def __init__(self, gw: GatewayProcess, key: str | None) -> None:
        self.gw = gw
        self.http = httpx.Client(base_url=f"{gw.root}/ui", follow_redirects=False, timeout=30)
        if key is not None:
            form = self.http.get("/signin")
            token = CSRF.search(form.text)
            assert token, form.text
            signed = self.http.post("/signin", data={"api_key": key, "csrf": token.group(1)})
            assert signed.status_code == 303 and signed.headers["location"] == "/ui/", signed.text
        page = self.http.get("/")
        found = CSRF.search(page.text)
        assert found, page.text
        self.csrf = found.group(1)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True) -> httpx.Response:
        return self.http.post(path, data={**(data or {}), **({"csrf": self.csrf} if csrf else {})})

    def close(self) -> None:
        self.http.close()


def build_dataset(console: Console, form: dict[str, str]) -> str:
    """Build a dataset from the datasets page's form and wait for it; its id."""
    started = console.post("/datasets", form)
    assert started.status_code == 303 and "build=" in started.headers["location"], started.text
    deadline, page = time.time() + 90, ""
    while time.time() < deadline:
        page = console.get(started.headers["location"].removeprefix("/ui")).text
        if 'data-status="building"' not in page:
            break
        time.sleep(0.5)
    assert 'data-status="done"' in page, page
    found = re.search(r'data-testid="dataset-row" data-id="([^"]+)"', page)
    assert found, page
    return found.group(1)
