"""Shared fixtures live in tests/fixtures/, one module per real component they start."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# one dequantized copy of the model for every TUNELOOP_HOME the tests create
os.environ.setdefault("TUNELOOP_MODEL_CACHE", str(Path(__file__).resolve().parents[1] / ".tuneloop" / "model-cache"))

pytest_plugins = ["tests.fixtures.gateway", "tests.fixtures.database", "tests.fixtures.engine"]
