"""Fixtures of the console's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.store import db


@pytest.fixture
def engine(database_url: str) -> Iterator[Any]:
    """A migrated, empty log database (SQLite and PostgreSQL: ``database_url`` is parametrised)."""
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()
