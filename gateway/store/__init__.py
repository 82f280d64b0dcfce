"""The data layer: one schema (one ``MetaData``), one migration chain, a module per domain.

* ``db`` — engines (SQLite WAL / PostgreSQL through psycopg 3) and ``upgrade`` (Alembic);
* ``schema`` — the ``MetaData`` and the core tables (interactions, feedback, datasets,
  jobs, adapters, routes, api_keys); the other domain modules declare theirs on it;
* ``interactions`` (stored completions), ``messages``, ``feedback``, ``owners`` (whose
  data trains an alias), ``files``, ``jobs`` (events, checkpoints), ``registry``
  (adapter versions, route history), ``routes``, ``keys``, ``datasets`` (lineage),
  ``cycles`` and ``loop_schema`` (the loop's), ``costs`` and ``cost_days`` (its kept closed days),
  ``canary``, ``audit`` (the audit trail),
  ``forget`` (erasing a completion or a user's data), ``responses`` (stored Responses API objects),
  ``sessions`` and ``traffic`` (the console's sign-in sessions and its reads of the log), ``upkeep``
  (planner statistics and kept days, in the gateway's background).

The interaction log's relay, writer child and spool live in ``gateway/log/``; its only
SQL is the writer's insert (``gateway/log/sink.py``).
"""

from __future__ import annotations

import sqlalchemy as sa


def metadata() -> sa.MetaData:
    """The one ``MetaData`` with every table declared (importing each domain module)."""
    from gateway.store import (  # noqa: F401  (they declare tables)
        audit,
        cost_days,
        datasets,
        files,
        jobs,
        loop_schema,
        responses,
        schema,
        sessions,
        traffic,
    )

    return schema.metadata
