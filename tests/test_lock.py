"""The supply chain files agree: every dependency of pyproject.toml is in requirements.lock with at least one
hash, torch is the CPU build, and the SBOM (sbom.cdx.json) lists exactly what the lock pins. A change to
pyproject.toml without ``./dev lock`` fails here; the install itself (``./dev``) uses ``--require-hashes``."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, tuple[str, list[str]]]:
    """``{name: (version, hashes)}`` of requirements.lock."""
    out: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line):
            current = _norm(m.group(1))
            out[current] = (m.group(2), [])
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            out[current][1].append(h.group(1))
    return out


def test_every_dependency_is_locked_with_hashes() -> None:
    lock = _lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for spec in wanted:
        name = _norm(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0])
        assert name in lock, f"{name} is in pyproject.toml but not in requirements.lock: run ./dev lock"
    assert all(hashes for _, hashes in lock.values()), [n for n, (_, h) in lock.items() if not h]
    assert lock["torch"][0] == "2.13.0+cpu"  # never a CUDA build
    assert "vllm" not in lock  # the deploy-side extra stays out of the CPU lock


def test_the_sbom_lists_what_the_lock_pins() -> None:
    sbom = json.loads((REPO / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {_norm(c["name"]): c["version"] for c in sbom["components"]}
    assert listed == {n: v for n, (v, _) in _lock().items()}


def test_no_known_vulnerability_in_the_lock() -> None:
    """pip-audit against PyPI's advisories (its JSON API), for every pin of the lock. Where the service
    cannot be reached, or knows none of the pinned versions (a mirror ahead of PyPI), the test is skipped,
    saying so; a known vulnerability fails it, naming the package and the advisory."""
    import subprocess
    import sys

    import pytest

    out = subprocess.run([sys.executable, "-m", "pip_audit", "--disable-pip", "--no-deps", "-r",
                          str(REPO / "requirements.lock"), "-s", "pypi", "--progress-spinner", "off", "-f", "json"],
                         capture_output=True, text=True, timeout=300)
    try:
        deps = json.loads(out.stdout)["dependencies"]
    except (ValueError, KeyError):
        pytest.skip(f"dependency audit: the advisory service could not be reached ({out.stderr.strip()[-300:]})")
    vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in deps if d.get("vulns")}
    assert not vulnerable, f"known vulnerabilities in requirements.lock: {vulnerable}"
    unaudited = [d["name"] for d in deps if "skip_reason" in d]
    if len(unaudited) == len(deps):
        pytest.skip(f"dependency audit: PyPI's advisories know none of the {len(deps)} pinned versions here")
