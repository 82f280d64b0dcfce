"""Shared fixtures live in tests/fixtures/, one module per real component they start."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# one dequantized copy of the model for every TUNELOOP_HOME the tests create
os.environ.setdefault("TUNELOOP_MODEL_CACHE", str(Path(__file__).resolve().parents[1] / ".tuneloop" / "model-cache"))

pytest_plugins = ["tests.fixtures.gateway", "tests.fixtures.database", "tests.fixtures.engine"]

# The files that take longest (measured serially, 2026-12-06), run first: `pytest -n` hands whole files
# to the workers in collection order, so starting with the longest lets the workers finish together
# (longest-first scheduling) instead of one worker starting a two-minute file near the end. The type check
# goes second, on the other worker: in a fresh clone the first file's gateway spends ~20 s building the
# model cache, which every other early file would wait for (adapters.engine.paths.building); mypy needs none.
LONGEST_FIRST = ["tests/loop/test_cycle.py", "tests/test_types.py", "tests/datasets/test_gateway_e2e.py",
                 "tests/training/test_cli.py", "tests/engine/test_engine.py", "tests/engine/test_hardening.py",
                 "tests/training/test_trainer.py", "tests/loop/test_migrate.py", "tests/training/test_distributed.py",
                 "tests/engine/test_structured.py", "tests/training/test_api.py", "tests/security/test_fuzz.py"]


def pytest_collection_modifyitems(items: list) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep order
