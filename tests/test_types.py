"""gateway/ and adapters/ pass mypy (settings and the strictness chosen, with the reason, in
pyproject.toml's [tool.mypy]). The cache sits in .tuneloop/mypy-cache: a rerun checks only what
changed (seconds); a fresh clone's first run is cold (about a minute and a half of CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)  # cold, on a shared 2-core machine
def test_mypy_is_clean():
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
