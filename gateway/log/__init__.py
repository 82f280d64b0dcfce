"""The interaction log: the relay off the request path, the writer child with its spool, export.

The tables and migrations are the data layer's (``gateway/store/``).

``LogService`` (``gateway.log.service``) is the entry point; ``gateway.log.retention.prune`` deletes old
interactions. The package itself imports nothing, so the writer child (``child.py``) loads only what it
runs: not the relay, asyncio or the PostgreSQL driver on SQLite.
"""
