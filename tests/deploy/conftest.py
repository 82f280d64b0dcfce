"""Rendered deploy/ manifests, shared by the deploy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy import kustomize

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
RENDERERS = ("python", "binary")


def render(overlay: str, renderer: str) -> list[dict[str, Any]]:
    path = DEPLOY / "overlays" / overlay
    if renderer == "binary":
        if kustomize.binary() is None:
            pytest.skip(kustomize.INSTALL_HINT)
        return kustomize.render_binary(path)
    return kustomize.render_python(path)


_cache: dict[tuple[str, str], list[dict[str, Any]]] = {}


@pytest.fixture(params=[(o, r) for o in OVERLAYS for r in RENDERERS],
                ids=[f"{o}-{r}" for o in OVERLAYS for r in RENDERERS])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(overlay, objects): every overlay, rendered by each renderer present."""
    if request.param not in _cache:
        _cache[request.param] = render(*request.param)
    return request.param[0], _cache[request.param]


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """One overlay rendered the way the suite can (binary when present, else Python)."""
    key = (request.param, "binary" if kustomize.binary() else "python")
    if key not in _cache:
        _cache[key] = render(*key)
    return _cache[key]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(obj)["containers"] if c["name"] == name)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]
