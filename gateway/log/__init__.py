"""The interaction log: the relay off the request path, the writer child with its spool, export.

The tables and migrations are the data layer's (``gateway/store/``).

``LogService`` is the entry point (see ``service.py``).
"""

from gateway.log.record import InteractionRecord
from gateway.log.retention import prune
from gateway.log.service import LogService, default_database_url

__all__ = ["InteractionRecord", "LogService", "default_database_url", "prune"]
