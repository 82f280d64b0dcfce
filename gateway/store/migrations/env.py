"""Alembic environment for the data layer (every table, one migration chain).

Run programmatically by ``gateway.store.db.upgrade`` (no alembic.ini at runtime):
the caller passes an open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from gateway.store import metadata as all_tables

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline mode is not used
    raise RuntimeError("gateway.store migrations run through gateway.store.db.upgrade()")

context.configure(
    connection=connection,
    target_metadata=all_tables(),
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite has no ALTER for most changes
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
