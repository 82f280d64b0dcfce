"""The interaction log: schema and migrations, the batched writer with its spool, reads.

``LogService`` is the entry point (see ``service.py``).
"""

from gateway.log.record import InteractionRecord
from gateway.log.retention import prune
from gateway.log.service import LogService, default_database_url

__all__ = ["InteractionRecord", "LogService", "default_database_url", "prune"]
