"""Routes stored in the database: promotion writes them, every gateway replica reads them.

A row overrides (or adds) one model of the YAML config: ``config`` is that model's entry
(``routes``, ``fallbacks``, ...). Each write bumps ``version`` and ``updated``, so replicas
can poll a cheap fingerprint and reload only on change.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from gateway.store.schema import routes as t


class RouteStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def fingerprint(self) -> tuple[Any, ...]:
        q = sa.select(sa.func.count(), sa.func.max(t.c.updated), sa.func.sum(t.c.version))
        with self.engine.connect() as conn:
            return tuple(conn.execute(q).one())

    def all(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r.model: r.config for r in conn.execute(sa.select(t.c.model, t.c.config))}

    def get(self, model: str) -> tuple[dict[str, Any], int] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.config, t.c.version).where(t.c.model == model)).first()
        return None if row is None else (row.config, row.version)

    def put(self, model: str, config: dict[str, Any]) -> int:
        """Write ``model``'s routes; returns the new version."""
        now = time.time()
        with self.engine.begin() as conn:
            current = conn.execute(sa.select(t.c.version).where(t.c.model == model)
                                   .with_for_update()).scalar()
            if current is None:
                conn.execute(t.insert().values(model=model, config=config, version=1, updated=now))
                return 1
            conn.execute(t.update().where(t.c.model == model)
                         .values(config=config, version=current + 1, updated=now))
            return current + 1

    def delete(self, model: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(t.delete().where(t.c.model == model)).rowcount > 0
