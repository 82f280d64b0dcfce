"""Where the test suite's CPU goes: ``./dev test`` run under a /proc poller, CPU summed by process kind.

The suite is CPU-bound on 2 cores, and most of its processes are short-lived Python interpreters (each
gateway, its log writer child and job runner, engines, trainers, CLI commands). This runs the README's
test command once as a child, samples /proc every ``--every`` seconds for that child's descendants (a
process is followed from the first sample that sees it under a followed parent, also after it is
re-parented), keeps each one's last command line and user + system CPU, and writes a table of CPU by kind: the module a
``python -m`` runs (with the ``gateway.cli`` command), the xdist workers (the tests' own code), chromium,
PostgreSQL and the rest. A process that lives less than one sample period may be missed; the table says
how much of the tree's CPU (from ``getrusage`` of the children) the samples saw.

It also loads itself into pytest as a plugin (``-p suite_cpu``: the hooks below) and adds, per test file,
each test's own CPU and that of the children it reaped (a gateway with its engine, a CLI command), from
``getrusage`` around each test. A process reaped later (a session fixture's engine, a detached trainer)
counts where it is reaped, or nowhere: the second table says which files cost most, not every second.

    .venv/bin/python loadtests/suite_cpu.py [--out loadtests/results/suite.md] [-- pytest args]

It stops when the suite does (the suite's own timeouts bound it). Only loopback servers are involved.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
FILES_ENV = "SUITE_CPU_FILES"  # the folder each pytest process writes its per-file CPU into
_by_file: dict[str, float] = defaultdict(float)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Iterator[None]:
    """(plugin) A test's CPU, set-up and tear-down included, added to its file's."""
    before = _cpu()
    yield
    _by_file[item.nodeid.split("::")[0]] += _cpu() - before


def pytest_sessionfinish(session: Any) -> None:
    """(plugin) Each pytest process (the xdist workers, the controller) writes its files' CPU."""
    folder = os.environ.get(FILES_ENV)
    if folder and _by_file:
        Path(folder, f"{os.getpid()}.json").write_text(json.dumps(_by_file))


def by_file(folder: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for part in Path(folder).glob("*.json"):
        for name, cpu in json.loads(part.read_text()).items():
            out[name] += cpu
    return out


def snapshot() -> dict[int, tuple[int, str, float, str]]:
    """pid -> (parent, start time, CPU s, command line) for every process now."""
    out: dict[int, tuple[int, str, float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        out[int(entry)] = (int(fields[1]), fields[19], (int(fields[11]) + int(fields[12])) / TICK, cmd)
    return out


def kind(cmd: str) -> str:
    """What a process is, from its command line."""
    if "chrom" in cmd:
        return "chromium (browser tests)"
    if "postgres" in cmd.split(" ")[0] or cmd.startswith("postgres:"):
        return "PostgreSQL (servers the tests start)"
    if "exec(eval(sys.stdin" in cmd or "execnet" in cmd:
        return "xdist workers (the tests' own code)"
    m = re.search(r" -m (\S+)(?: (\S+))?", cmd)
    if m:
        return f"gateway.cli {m.group(2)}" if m.group(1) == "gateway.cli" else m.group(1)
    if " -c " in cmd and "python" in cmd:
        return "python -c (tests' scripts)"
    return cmd.split(" ")[0].rsplit("/", 1)[-1] or "(no command line)"


def run(pytest_args: list[str], every: float, files: str) -> tuple[dict[str, list[float]], float, float, int]:
    """Run the suite; (CPU s of each process by kind, wall s, tree CPU s, exit status). The plugin writes
    the per-file CPU into ``files``."""
    start = time.monotonic()
    path = os.pathsep.join(p for p in (str(ROOT / "loadtests"), os.environ.get("PYTHONPATH")) if p)
    child = subprocess.Popen([str(ROOT / "dev"), "test", "-p", "suite_cpu", *pytest_args], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": path, FILES_ENV: files})
    followed: dict[tuple[int, str], tuple[str, float]] = {}  # (pid, start time) -> (kind, CPU s)
    live: set[int] = {child.pid}
    while child.poll() is None:
        procs = snapshot()
        for pid, (parent, started, cpu, cmd) in sorted(procs.items()):
            key = (pid, started)
            if key in followed or parent in live or pid == child.pid:  # the kind as last seen (after an exec)
                followed[key] = (kind(cmd) if cmd else followed.get(key, ("(no command line)", 0.0))[0], cpu)
        live = {pid for pid, started in followed if procs.get(pid, (0, ""))[1] == started}
        time.sleep(every)
    wall = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for k, cpu in followed.values():
        by_kind[k].append(cpu)
    return by_kind, wall, usage.ru_utime + usage.ru_stime, child.returncode


def table(by_kind: dict[str, list[float]], files: dict[str, float], wall: float, tree: float, status: int) -> str:
    seen = sum(sum(v) for v in by_kind.values())
    lines = ["# Where the suite's CPU goes (loadtests/suite_cpu.py)\n",
             f"Run {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · `./dev test` exit {status} · "
             f"wall {wall:,.0f} s · CPU of the whole tree {tree:,.0f} s (getrusage), of which the samples saw "
             f"{seen:,.0f} s\n",
             "| process kind | processes | CPU s | CPU s each | share |", "|---|---:|---:|---:|---:|"]
    for k, cpus in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        if sum(cpus) < 0.5:
            continue
        lines.append(f"| {k} | {len(cpus)} | {sum(cpus):,.1f} | {sum(cpus) / len(cpus):,.2f} | "
                     f"{sum(cpus) / seen:.1%} |")
    lines += ["", "By test file, the 15 that cost most (each test's own CPU and its reaped children's):", "",
              "| test file | CPU s |", "|---|---:|"]
    lines += [f"| `{name}` | {cpu:,.1f} |" for name, cpu in sorted(files.items(), key=lambda kv: -kv[1])[:15]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="write the table here too (markdown)")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as files:
        by_kind, wall, tree, status = run(a.pytest_args, a.every, files)
        text = table(by_kind, by_file(files), wall, tree, status)
    print(text)
    if a.out:
        a.out.write_text(text)
    sys.exit(status)


if __name__ == "__main__":
    main()
