"""Dataset builds started from the console: ``tuneloop dataset build`` itself, as a child process.

The builder lives on the training side (``adapters.datasets.build``), which the gateway never imports
(tests/test_layers.py: the gateway reaches that side through the database and child processes
started by module name). So the console runs the very command an engineer would type, with the
gateway's own database and home in its environment (the URL stays off the command line), in a thread
of its own: the request that starts it returns at once, and the datasets page shows the build until
its row is in the ``datasets`` table. The builds in progress are this process's (a gateway with
several workers shows each build on the worker that started it; the dataset, once built, everywhere).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

TIMEOUT_S = 6 * 3600
KEEP = 50  # finished builds remembered for the page


@dataclass
class BuildRequest:
    fmt: str = "sft"  # sft | dpo | prompt_completion
    name: str = ""
    model: str | None = None
    project: str | None = None  # the viewer's tenancy: a project key builds from its own traffic only
    since: str | None = None
    until: str | None = None
    min_rating: float | None = None
    has_correction: bool = False

    def args(self, out: Path) -> list[str]:
        """``tuneloop dataset build``'s arguments."""
        args = ["dataset", "build", "--out", str(out), "--format", self.fmt, "--name", self.name]
        for flag, value in (("--model", self.model), ("--project", self.project), ("--since", self.since),
                            ("--until", self.until)):
            if value:
                args += [flag, value]
        if self.min_rating is not None:
            args += ["--min-rating", f"{self.min_rating:g}"]
        return args + (["--has-correction"] if self.has_correction else [])


@dataclass
class Build:
    id: str
    request: BuildRequest
    command: str  # what to type to do the same from a shell
    started: float = field(default_factory=time.time)
    status: str = "building"  # building | done | failed
    dataset_id: str | None = None
    error: str | None = None
    report: dict[str, Any] | None = None


class Builds:
    """The builds this gateway process started (``app.state.dataset_builds``)."""

    def __init__(self) -> None:
        self._builds: dict[str, Build] = {}
        self._lock = threading.Lock()

    def start(self, request: BuildRequest, home: Path, env: dict[str, str]) -> Build:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", request.name).strip("-.") or "dataset"
        out = home / "datasets" / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.jsonl"
        args = request.args(out)
        build = Build("build-" + secrets.token_hex(6), request, "tuneloop " + shlex.join(args))
        with self._lock:
            self._builds[build.id] = build
            finished = [b for b in self._builds.values() if b.status != "building"]
            for old in sorted(finished, key=lambda b: b.started)[:-KEEP]:
                del self._builds[old.id]
        cmd = [sys.executable, "-m", "gateway.cli", *args, "--json", "--no-progress"]
        full = {**os.environ, **env}
        full.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the child's metrics are not the gateway's
        threading.Thread(target=self._run, args=(build, cmd, full), daemon=True,
                         name=f"dataset-{build.id}").start()
        return build

    def _run(self, build: Build, cmd: list[str], env: dict[str, str]) -> None:
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            build.status, build.error = "failed", str(exc)
            return
        if done.returncode == 0:
            try:
                report = orjson.loads(done.stdout)
            except orjson.JSONDecodeError:
                report = None
            if isinstance(report, dict) and report.get("dataset_id"):
                build.report, build.dataset_id, build.status = report, str(report["dataset_id"]), "done"
                return
        build.status = "failed"
        build.error = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-2000:] or \
            f"exit status {done.returncode}"

    def listed(self, project: str | None) -> list[Build]:
        """Newest first; a project sees its own (``None``: all)."""
        with self._lock:
            builds = list(self._builds.values())
        return sorted((b for b in builds if project is None or b.request.project == project),
                      key=lambda b: b.started, reverse=True)

    def get(self, build_id: str, project: str | None) -> Build | None:
        found = self._builds.get(build_id)
        return found if found and (project is None or found.request.project == project) else None
