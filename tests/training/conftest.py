"""Fixtures of the training tests: the loopback fake of OpenAI's files + fine-tuning API, and a
random-initialised small Qwen2 checkpoint (``tiny_base``) built once per test home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_finetune import FakeFineTuning
from tests.fixtures.engine import test_home
from tests.fixtures.gateway import free_port
from tests.training import tiny


@pytest.fixture(scope="session")
def fake_finetune() -> Iterator[FakeFineTuning]:
    server = FakeFineTuning(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """A Qwen2 checkpoint (2 layers, width 64, q/k/v biases, a sliding layer) with SmolLM2's tokenizer."""
    return tiny.build(test_home() / "tiny-bases" / f"qwen2-{tiny.VERSION}", "qwen2")
