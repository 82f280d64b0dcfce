"""The console's reads of the loop's tables: datasets, jobs and their loss points, adapters with their
lineage, and each alias's deployment, scoped to a project (``None``: every project, an admin's view).

    datasets(engine, project); dataset(engine, ds_id, project)      # with source_records, the interactions
    loss_points(engine, job_id)                                     # the metrics events, oldest first
    adapters_of(engine, project); adapter(engine, adapter_id, project)   # with the job's project
    deployment(engine, alias)                                       # the live canary/promotion row, if any

A dataset belongs to the project it was built for (``datasets.project``); a job to its creator's; an
adapter to its job's project (an adapter made outside a job, ``tuneloop adapters import``, to none:
only an admin sees it).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from gateway.store.datasets import DatasetStore
from gateway.store.jobs import job_events
from gateway.store.registry import AdapterRegistry, RouteHistory
from gateway.store.schema import adapters, datasets, jobs

Rows = list[dict[str, Any]]
LIST_COLUMNS = ("id", "name", "kind", "created", "project", "rows", "val_rows", "source", "path", "filters", "stale")


def datasets_of(engine: sa.Engine, project: str | None, limit: int = 100) -> Rows:
    """Newest first, with their filters (not their reports: those are read one at a time)."""
    q = sa.select(*(datasets.c[name] for name in LIST_COLUMNS)).order_by(datasets.c.created.desc()).limit(limit)
    if project is not None:
        q = q.where(datasets.c.project == project)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def dataset(engine: sa.Engine, dataset_id: str, project: str | None) -> dict[str, Any] | None:
    """One dataset with ``source_records`` (how many interactions it learned from), None when it is another
    project's (or none)."""
    row = DatasetStore(engine).get(dataset_id)
    if row is None or (project is not None and row["project"] != project):
        return None
    return row


def loss_points(engine: sa.Engine, job_id: str, limit: int = 5000) -> Rows:
    """The job's metrics events' data (step, train_loss, valid_loss, ...), oldest first."""
    q = (sa.select(job_events.c.data).where(job_events.c.job_id == job_id, job_events.c.type == "metrics")
         .order_by(job_events.c.seq).limit(limit))
    with engine.connect() as conn:
        return [dict(d) for d in conn.execute(q).scalars() if isinstance(d, dict) and "step" in d]


def _adapters_query(project: str | None) -> sa.Select[Any]:
    q = (sa.select(adapters, jobs.c.project, jobs.c.dataset_id)
         .select_from(adapters.outerjoin(jobs, adapters.c.job_id == jobs.c.id)))
    return q if project is None else q.where(jobs.c.project == project)


def adapters_of(engine: sa.Engine, project: str | None, limit: int = 200) -> Rows:
    """Adapter versions, newest first, each with its job's project and dataset."""
    q = _adapters_query(project).order_by(adapters.c.created.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def adapter(engine: sa.Engine, adapter_id: str, project: str | None) -> dict[str, Any] | None:
    """One adapter (by id) and its lineage: job, dataset (with how many interactions it came from)."""
    q = _adapters_query(project).where(adapters.c.id == adapter_id)
    with engine.connect() as conn:
        row = conn.execute(q).mappings().first()
    if row is None:
        return None
    lineage = AdapterRegistry(engine).lineage(adapter_id)
    found = lineage.get("dataset")
    if found is not None:
        full = DatasetStore(engine).get(found["id"])
        found["interactions"] = full["source_records"] if full else None
    return {**dict(row), "job": lineage.get("job"), "dataset": found}


def deployment(engine: sa.Engine, alias: str) -> dict[str, Any] | None:
    """The newest canary or promotion of ``alias`` not rolled back (what a rollback would undo)."""
    return RouteHistory(engine).current(alias)


def history(engine: sa.Engine, alias: str, limit: int = 10) -> Rows:
    return RouteHistory(engine).list(alias, limit)


def names(engine: sa.Engine, ids: list[str]) -> dict[str, str]:
    """Adapter ids -> ``name:version`` (for the route history)."""
    if not ids:
        return {}
    q = sa.select(adapters.c.id, adapters.c.name, adapters.c.version).where(adapters.c.id.in_(ids))
    with engine.connect() as conn:
        return {r.id: f"{r.name}:{r.version}" for r in conn.execute(q)}
