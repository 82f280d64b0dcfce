"""Alembic environment for the interaction log.

Run programmatically by ``gateway.log.db.upgrade`` (no alembic.ini at runtime):
the caller passes an open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from gateway.log.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline mode is not used
    raise RuntimeError("gateway.log migrations run through gateway.log.db.upgrade()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite has no ALTER for most changes
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
