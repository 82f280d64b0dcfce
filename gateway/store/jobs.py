"""Fine-tuning jobs, their events and checkpoints, and the adapters they produce.

    store = JobStore(engine)
    store.create({...}); store.get(job_id); store.list(after=..., limit=...)
    store.update(job_id, status="running"); store.finish(job_id, "succeeded", ...)
    store.add_event(job_id, "Step 3/10: loss=1.2", type="metrics", data={...})
    store.events(job_id, after=None, limit=20)        # newest first, as OpenAI lists them
    store.add_checkpoint(job_id, step, model, path, metrics); store.checkpoints(job_id)
    store.register_adapter(name, base_model, path, job_id, metrics)   # status "candidate"

The jobs table is also the queue between the gateway and the training side: a job the
API creates has no ``worker_pid``; a runner (``adapters.training.runner``) takes it with
``store.claim(job_id, pid)`` (compare-and-set on ``worker_pid``, so two runners sharing the
database never both start it) and starts its worker. ``waiting(engine)`` lists such jobs.

Status changes out of a terminal state (succeeded, failed, cancelled) are refused in
SQL (``WHERE status NOT IN ...``), so a late worker update never revives a cancelled job.
Columns added by migration ``0003_fine_tuning`` are declared here (``schema.py`` holds
0001's shape), like ``datasets.py`` does for 0002.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from gateway.store.schema import adapters, jobs, metadata  # jobs: one declaration, in schema.py

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
Rows = list[dict[str, Any]]  # named here: inside JobStore, ``list`` is its method
TERMINAL = ("succeeded", "failed", "cancelled")


job_events = sa.Table(
    "job_events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", JSONType),
    sa.Index("ix_job_events_job_seq", "job_id", "seq"),
)

job_checkpoints = sa.Table(
    "job_checkpoints", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("path", sa.String(1024)),
    sa.Column("metrics", JSONType),
    sa.Index("ix_job_checkpoints_job_step", "job_id", "step"),
)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class JobStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # --- jobs ---
    def create(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {"created": time.time(), "status": "validating_files", **row}
        row.setdefault("id", new_id("ftjob"))
        row["updated"] = row["created"]
        with self.engine.begin() as conn:
            conn.execute(jobs.insert().values(**row))
        return self.get(row["id"]) or row

    def get(self, job_id: str, project: str | None = None) -> dict[str, Any] | None:
        """The job, or None (also when it belongs to another ``project``; None = any)."""
        q = jobs.select().where(jobs.c.id == job_id)
        if project is not None:
            q = q.where(jobs.c.project == project)
        with self.engine.connect() as conn:
            found = conn.execute(q).mappings().first()
        return dict(found) if found else None

    def list(self, after: str | None = None, limit: int = 20,
             metadata: dict[str, str] | None = None, project: str | None = None
             ) -> tuple[Rows, bool]:
        """Newest first; ``after`` is the id of the last job of the previous page."""
        q = jobs.select().order_by(jobs.c.created.desc(), jobs.c.id.desc())
        if project is not None:
            q = q.where(jobs.c.project == project)
        if after:
            anchor = self.get(after)
            if anchor is not None and (project is None or anchor["project"] == project):  # another project's id
                # is treated as unknown: the page must not tell whether it exists
                q = q.where(sa.or_(jobs.c.created < anchor["created"],
                                   sa.and_(jobs.c.created == anchor["created"], jobs.c.id < after)))
        if not metadata:  # the metadata filter runs in Python (JSON on two dialects)
            q = q.limit(limit + 1)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        if metadata:
            rows = [r for r in rows if all((r["metadata"] or {}).get(k) == v for k, v in metadata.items())]
        return rows[:limit], len(rows) > limit

    def update(self, job_id: str, **fields: Any) -> bool:
        """Set fields unless the job already ended; True if a row changed."""
        stmt = (jobs.update().where(jobs.c.id == job_id, jobs.c.status.not_in(TERMINAL))
                .values(updated=time.time(), **fields))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount > 0

    def finish(self, job_id: str, status: str, **fields: Any) -> bool:
        assert status in TERMINAL
        return self.update(job_id, status=status, finished=time.time(), **fields)

    def claim(self, job_id: str, pid: int, expected: int | None = None) -> bool:
        """Take the job for process ``pid`` if its ``worker_pid`` is still ``expected`` (None: nobody
        took it yet) and it has not ended; True if this call took it."""
        holder = jobs.c.worker_pid.is_(None) if expected is None else jobs.c.worker_pid == expected
        stmt = (jobs.update().where(jobs.c.id == job_id, holder, jobs.c.status.not_in(TERMINAL))
                .values(worker_pid=pid, updated=time.time()))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount > 0

    def request_cancel(self, job_id: str) -> bool:
        return self.update(job_id, cancel_requested=True)

    def cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs.c.cancel_requested, jobs.c.status)
                               .where(jobs.c.id == job_id)).first()
        return row is None or bool(row[0]) or row[1] == "cancelled"

    # --- events ---
    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None, created: float | None = None,
                  event_id: str | None = None) -> str:
        eid = event_id or new_id("ftevent")
        with self.engine.begin() as conn:
            conn.execute(job_events.insert().values(id=eid, job_id=job_id, created=created or time.time(),
                                                    level=level, type=type, message=message, data=data or {}))
        return eid

    def has_event(self, event_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(job_events.c.seq).where(job_events.c.id == event_id)).first() is not None

    def events(self, job_id: str, after: str | None = None, limit: int = 20) -> tuple[Rows, bool]:
        """Newest first; ``after`` is the id of the last event of the previous page."""
        q = job_events.select().where(job_events.c.job_id == job_id)
        if after:
            q = q.where(job_events.c.seq < sa.select(job_events.c.seq).where(job_events.c.id == after)
                        .scalar_subquery())
        q = q.order_by(job_events.c.seq.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return rows[:limit], len(rows) > limit

    # --- checkpoints ---
    def add_checkpoint(self, job_id: str, step: int, model: str, path: str | None,
                       metrics: dict[str, Any]) -> str:
        cid = new_id("ftckpt")
        with self.engine.begin() as conn:
            conn.execute(job_checkpoints.insert().values(id=cid, job_id=job_id, created=time.time(), step=step,
                                                         model=model, path=path, metrics=metrics))
        return cid

    def checkpoints(self, job_id: str, after: str | None = None,
                    limit: int = 10) -> tuple[Rows, bool]:
        q = job_checkpoints.select().where(job_checkpoints.c.job_id == job_id)
        if after:
            q = q.where(job_checkpoints.c.step < sa.select(job_checkpoints.c.step)
                        .where(job_checkpoints.c.id == after).scalar_subquery())
        q = q.order_by(job_checkpoints.c.step.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return rows[:limit], len(rows) > limit

    # --- adapters ---
    def register_adapter(self, name: str, base_model: str, path: str | None, job_id: str,
                         metrics: dict[str, Any] | None) -> str:
        """A new ``candidate`` version of ``name`` (evaluation and promotion come later)."""
        aid = new_id("adapter")
        with self.engine.begin() as conn:
            version = conn.execute(sa.select(sa.func.coalesce(sa.func.max(adapters.c.version), 0))
                                   .where(adapters.c.name == name)).scalar_one() + 1
            conn.execute(adapters.insert().values(id=aid, name=name, version=version, base_model=base_model,
                                                  path=path, job_id=job_id, status="candidate",
                                                  created=time.time(), metrics=metrics))
        return aid

    def adapters_of(self, job_id: str) -> Rows:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(adapters.select().where(adapters.c.job_id == job_id)).mappings()]


def unfinished(engine: sa.Engine, backend: str = "local") -> list[dict[str, Any]]:
    """Jobs of ``backend`` not in a final state (oldest first), e.g. to resume after a restart."""
    q = sa.select(jobs).where(jobs.c.backend == backend, jobs.c.status.not_in(TERMINAL)).order_by(jobs.c.created)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def waiting(engine: sa.Engine) -> list[dict[str, Any]]:
    """Unfinished jobs no process took yet (``worker_pid`` unset), oldest first: the runner's queue."""
    q = (sa.select(jobs).where(jobs.c.worker_pid.is_(None), jobs.c.status.not_in(TERMINAL))
         .order_by(jobs.c.created))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def running(engine: sa.Engine) -> list[dict[str, Any]]:
    """Unfinished jobs a process took (``worker_pid`` set): what holds the runners' slots."""
    q = sa.select(jobs.c.id, jobs.c.project).where(jobs.c.worker_pid.is_not(None), jobs.c.status.not_in(TERMINAL))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def job_of_model(engine: sa.Engine, name: str) -> dict[str, Any] | None:
    """The local job whose fine-tuned model is ``name`` (None: no such model of ours)."""
    q = sa.select(jobs).where(jobs.c.fine_tuned_model == name, jobs.c.backend == "local").limit(1)
    with engine.connect() as conn:
        row = conn.execute(q).mappings().first()
    return None if row is None else dict(row)
