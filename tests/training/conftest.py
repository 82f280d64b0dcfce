"""Fixtures of the training tests: the loopback fake of OpenAI's files + fine-tuning API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_finetune import FakeFineTuning
from tests.fixtures.gateway import free_port


@pytest.fixture(scope="session")
def fake_finetune() -> Iterator[FakeFineTuning]:
    server = FakeFineTuning(free_port()).start()
    yield server
    server.stop()
