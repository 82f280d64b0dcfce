"""Make the engine fixtures available here until the root conftest registers ``tests.fixtures.engine``.

pytest forbids ``pytest_plugins`` in a non-root conftest, so the fixtures are
imported instead, but only while the root does not register the module (a
second registration would define the session fixtures twice).
"""

import tests.conftest as _root

if "tests.fixtures.engine" not in getattr(_root, "pytest_plugins", []):
    from tests.fixtures.engine import engine_server, test_adapters  # noqa: F401
