"""Shared fixtures live in tests/fixtures/, one module per real component they start."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["tests.fixtures.gateway", "tests.fixtures.database"]
