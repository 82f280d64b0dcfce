"""What is built on first use and shared (the dequantized default model, beside it a lock) is built by one
process when several start at once: the others wait, then find it (``adapters.engine.paths.building``).
Real processes racing, each with the check-then-build the model cache does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RACER = """
import sys, time
from pathlib import Path
from adapters.engine.paths import building
target, log = Path(sys.argv[1]), Path(sys.argv[2])
with building(target):
    if not (target / "done").exists():
        time.sleep(0.3)  # a slow build: the others arrive meanwhile
        target.mkdir()
        (target / "done").write_text("x")
        with log.open("a") as f:
            f.write("built\\n")
print((target / "done").read_text())
"""


def test_processes_starting_at_once_build_it_once_and_all_find_it(tmp_path):
    target, log = tmp_path / "cache" / "model", tmp_path / "builds.log"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(target), str(log)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in racers]
    assert [p.returncode for p in racers] == [0] * 4
    assert outs == ["x\n"] * 4  # every one found it built
    assert log.read_text() == "built\n"  # by one of them


def test_a_builder_that_dies_leaves_the_lock_to_the_next(tmp_path):
    target, log = tmp_path / "cache" / "model", tmp_path / "builds.log"
    dying = RACER.replace('time.sleep(0.3)', 'import os; os._exit(3)')
    first = subprocess.run([sys.executable, "-c", dying, str(target), str(log)], cwd=REPO, timeout=60)
    assert first.returncode == 3 and not target.exists()
    second = subprocess.run([sys.executable, "-c", RACER, str(target), str(log)], cwd=REPO, timeout=60,
                            capture_output=True, text=True)
    assert second.stdout == "x\n" and log.read_text() == "built\n"
