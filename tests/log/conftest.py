"""Until tests/conftest.py registers ``tests.fixtures.database`` as a plugin."""

from tests.fixtures.database import *  # noqa: F401,F403
