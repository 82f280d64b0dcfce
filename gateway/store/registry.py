"""Adapter versions, their lineage and the route history promotion writes.

    reg = AdapterRegistry(engine)
    reg.get("adapter-..." or "name" or "name:2"), reg.list(), reg.set_status(id, "live")
    reg.merge_metrics(id, {"eval": {...}}), reg.lineage(id)  # job, dataset, eval
    hist = RouteHistory(engine)
    hist.add(alias, "promote", adapter_id=..., before=..., after=..., restore=...)
    hist.current(alias)  # newest change not rolled back
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from gateway.store.loop_schema import route_history
from gateway.store.schema import adapters, datasets, jobs

STATES = ("candidate", "canary", "live", "retired")


class AdapterRegistry:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def get(self, ref: str) -> dict[str, Any] | None:
        """By id, by ``name`` (newest version) or by ``name:version``."""
        q = adapters.select()
        if ref.startswith("adapter-"):
            q = q.where(adapters.c.id == ref)
        elif ":" in ref and ref.rsplit(":", 1)[1].isdigit():
            name, version = ref.rsplit(":", 1)
            q = q.where(adapters.c.name == name, adapters.c.version == int(version))
        else:
            q = q.where(adapters.c.name == ref).order_by(adapters.c.version.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def list(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        q = adapters.select().order_by(adapters.c.created.desc()).limit(limit)
        if status:
            q = q.where(adapters.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def set_status(self, adapter_id: str, status: str) -> None:
        if status not in STATES:
            raise ValueError(f"status must be one of {STATES}")
        with self.engine.begin() as conn:
            conn.execute(adapters.update().where(adapters.c.id == adapter_id).values(status=status))

    def merge_metrics(self, adapter_id: str, extra: dict[str, Any]) -> dict[str, Any]:
        with self.engine.begin() as conn:
            current = conn.execute(sa.select(adapters.c.metrics).where(adapters.c.id == adapter_id)).scalar()
            merged = {**(current or {}), **extra}
            conn.execute(adapters.update().where(adapters.c.id == adapter_id).values(metrics=merged))
        return merged

    def register(self, name: str, base_model: str, path: str, job_id: str | None = None,
                 metrics: dict[str, Any] | None = None) -> str:
        """An adapter made outside a job (imported folder): a new ``candidate`` version."""
        from gateway.store.jobs import new_id

        with self.engine.begin() as conn:
            version = conn.execute(sa.select(sa.func.coalesce(sa.func.max(adapters.c.version), 0))
                                   .where(adapters.c.name == name)).scalar_one() + 1
            aid = new_id("adapter")
            conn.execute(adapters.insert().values(id=aid, name=name, version=version, base_model=base_model,
                                                  path=path, job_id=job_id, status="candidate",
                                                  created=time.time(), metrics=metrics))
        return aid

    def lineage(self, adapter_id: str) -> dict[str, Any]:
        """adapter -> job -> dataset (with its row counts and files)."""
        a = self.get(adapter_id)
        if a is None:
            return {}
        out: dict[str, Any] = {"adapter": a, "job": None, "dataset": None}
        with self.engine.connect() as conn:
            if a["job_id"]:
                job = conn.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.model, jobs.c.dataset_id,
                                             jobs.c.training_file, jobs.c.method)
                                   .where(jobs.c.id == a["job_id"])).mappings().first()
                out["job"] = dict(job) if job else None
            ds_id = (out["job"] or {}).get("dataset_id") or (a["metrics"] or {}).get("dataset_id")
            if ds_id:
                ds = conn.execute(sa.select(datasets.c.id, datasets.c.name, datasets.c.kind, datasets.c.rows,
                                            datasets.c.path, datasets.c.created)
                                  .where(datasets.c.id == ds_id)).mappings().first()
                out["dataset"] = dict(ds) if ds else None
        return out


class RouteHistory:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(self, model: str, action: str, *, before: dict[str, Any] | None, after: dict[str, Any] | None,
            restore: dict[str, Any] | None, adapter_id: str | None = None,
            previous_adapter_id: str | None = None, reason: str | None = None) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(route_history.insert().values(
                model=model, action=action, adapter_id=adapter_id, previous_adapter_id=previous_adapter_id,
                before=before, after=after, restore=restore, created=time.time(), reason=reason))
            key = res.inserted_primary_key
            assert key is not None  # typed optional; a one-row INSERT always has it
            return int(key[0])

    def current(self, model: str, actions: tuple[str, ...] = ("canary", "promote")) -> dict[str, Any] | None:
        """The newest deployment of ``model`` that was not rolled back."""
        q = (route_history.select()
             .where(route_history.c.model == model, route_history.c.rolled_back.is_(None),
                    route_history.c.action.in_(actions))
             .order_by(route_history.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def mark_rolled_back(self, model: str, adapter_id: str | None) -> None:
        """Every live row of this deployment (its canary and its promotion) is undone at once."""
        with self.engine.begin() as conn:
            conn.execute(route_history.update()
                         .where(route_history.c.model == model, route_history.c.rolled_back.is_(None),
                                route_history.c.adapter_id == adapter_id)
                         .values(rolled_back=time.time()))

    def list(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        q = (route_history.select().where(route_history.c.model == model)
             .order_by(route_history.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]
