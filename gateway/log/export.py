"""Stream interactions with their newest feedback, for dataset builds.

    for row in stream(engine, ExportFilters(model="support-bot", min_rating=0.5)):
        row["request"], row["response"], row["rating"], row["correction"], ...

Rows come in ``(created, id)`` order (the ``ix_interactions_created_id`` index) through
a server-side cursor on PostgreSQL and SQLite's own stepping cursor, ``batch`` rows at
a time, so memory stays flat whatever the log size. The newest rating and the newest
correction of each completion are correlated sub-queries on
``ix_feedback_completion_created`` (one index probe per row, no big join to sort).

``stream_batches`` is the fast path the dataset builder uses: SQLAlchemy compiles the
query, the DB-API cursor runs it, and rows come back as plain tuples (``RAW_COLUMNS``)
with the JSON columns as *text* (``CAST(... AS TEXT)``), so nothing is decoded per row
by SQLAlchemy or the driver; the caller decodes them once (orjson). ``stream`` yields
the decoded dicts on top of it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from gateway.store.db import driver_connection
from gateway.store.owners import feedback_of, interactions_of
from gateway.store.schema import feedback, interactions

t = interactions
# Only what a dataset line needs: every JSON column read costs a decode per row.
EXPORT_COLUMNS = ("id", "created", "requested_model", "upstream_model", "request", "response",
                  "finish_reason", "status")
# ``stream_batches``' tuples: JSON columns (request, response, correction) as text.
RAW_COLUMNS = ("id", "status", "finish_reason", "request", "response", "rating", "correction")
_JSON_COLUMNS = frozenset(("request", "response", "correction"))


@dataclass
class ExportFilters:
    """What to take from the log; ``None`` means no condition."""

    model: str | None = None  # the alias clients sent (requested_model)
    upstream_model: str | None = None  # the model/adapter the request reached
    project: str | None = None
    projects: list[str] | None = None  # the alias owner's choice: only these projects' traffic and feedback
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive
    metadata: dict[str, str] = field(default_factory=dict)  # every pair must match
    min_rating: float | None = None  # newest rating, on the [-1, 1] scale
    has_correction: bool = False
    status_ok: bool = True  # HTTP 200 only
    primary_only: bool = True  # skip shadow records
    # which API's interactions: chat completions (SFT, DPO, the loop) or legacy text completions
    # ("text_completion": the prompt_completion format); never both in one export
    object: str = "chat.completion"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, False)} | {
            "status_ok": self.status_ok}


def _newest(column: sa.ColumnElement[Any], *extra: sa.ColumnElement[bool]) -> Any:
    return (sa.select(column)
            .where(feedback.c.completion_id == t.c.id, column.is_not(None), *extra)
            .order_by(feedback.c.created.desc(), feedback.c.id.desc())
            .limit(1).correlate(t).scalar_subquery())


def _metadata_match(dialect: str, key: str, value: str) -> sa.ColumnElement[bool]:
    if dialect == "postgresql":
        # a text literal cast to JSONB: a plain string parameter, no bind processor
        doc = orjson.dumps({key: value}).decode()
        return t.c.metadata.op("@>")(sa.cast(sa.literal(doc, sa.Text), t.c.metadata.type))
    return sa.func.json_extract(t.c.metadata, f'$."{key}"') == value


def export_query(filters: ExportFilters, dialect: str, raw: bool = False) -> sa.Select[Any]:
    """The export query; ``raw``: only ``RAW_COLUMNS``, JSON columns cast to text."""
    by = feedback_of(filters.projects)
    rating = _newest(feedback.c.rating, *by)
    # A feedback row without a correction stores JSON null, not SQL NULL.
    correction = _newest(feedback.c.correction, sa.cast(feedback.c.correction, sa.Text) != "null", *by)
    if raw:
        cols = {name: sa.cast(t.c[name], sa.Text).label(name) if name in _JSON_COLUMNS
                else t.c[name] for name in RAW_COLUMNS if name in t.c}
        cols["rating"] = rating.label("rating")
        cols["correction"] = sa.cast(correction, sa.Text).label("correction")
        q = sa.select(*(cols[name] for name in RAW_COLUMNS))
    else:
        q = sa.select(*(t.c[name] for name in EXPORT_COLUMNS), rating.label("rating"),
                      correction.label("correction"))
    conds: list[sa.ColumnElement[bool]] = []
    f = filters
    if f.model is not None:
        conds.append(t.c.requested_model == f.model)
    if f.upstream_model is not None:
        conds.append(t.c.upstream_model == f.upstream_model)
    if f.project is not None:
        conds.append(t.c.project == f.project)
    conds.extend(interactions_of(f.projects))
    if f.since is not None:
        conds.append(t.c.created >= f.since)
    if f.until is not None:
        conds.append(t.c.created < f.until)
    for key, value in f.metadata.items():
        conds.append(_metadata_match(dialect, key, value))
    if f.min_rating is not None:
        conds.append(rating >= f.min_rating)
    if f.has_correction:
        conds.append(correction.is_not(None))
    if f.status_ok:
        conds.append(t.c.status == 200)
    if f.primary_only:
        conds.append(t.c.kind == "primary")
    conds.append(t.c.object == f.object)
    return q.where(*conds).order_by(t.c.created, t.c.id)


def count(engine: sa.Engine, filters: ExportFilters) -> int:
    """How many rows ``stream`` will yield (for a progress bar's total)."""
    q = export_query(filters, engine.dialect.name).with_only_columns(sa.func.count()).order_by(None)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def stream_batches(engine: sa.Engine, filters: ExportFilters, batch: int = 5000,
                   prefetch: int = 0) -> Iterator[list[tuple[Any, ...]]]:
    """Lists of up to ``batch`` tuples (``RAW_COLUMNS``; request, response and correction
    as JSON text or None), straight from the DB-API cursor (server-side on PostgreSQL).

    ``prefetch`` > 0: a thread reads ahead, up to that many batches, while the caller
    works on the current one (the driver releases the GIL while the database computes
    or steps, so reading overlaps the caller's work)."""
    if prefetch <= 0:
        yield from _fetch_batches(engine, filters, batch)
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for rows in _fetch_batches(engine, filters, batch):
                if not put(rows):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer
            put(_Failed(exc))

    th = threading.Thread(target=reader, name="export-reader", daemon=True)
    th.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        th.join()


_DONE = object()


@dataclass
class _Failed:
    exc: BaseException


def _fetch_batches(engine: sa.Engine, filters: ExportFilters,
                   batch: int) -> Iterator[list[tuple[Any, ...]]]:
    dialect = engine.dialect
    compiled = export_query(filters, dialect.name, raw=True).compile(dialect=dialect)
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(params[k] for k in compiled.positiontup or ())
    with engine.connect() as conn:
        dbapi_conn = driver_connection(conn)
        if dialect.name == "postgresql":
            cur = dbapi_conn.cursor(name=f"tuneloop_export_{id(conn):x}")
            cur.itersize = batch
        else:
            cur = dbapi_conn.cursor()
        try:
            cur.execute(str(compiled), params)
            while rows := cur.fetchmany(batch):
                yield rows
        finally:
            cur.close()
            conn.rollback()


def decode(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ``stream_batches`` tuple as the dict ``stream`` yields (JSON decoded)."""
    iid, status, finish, req, resp, rating, corr = row
    loads = orjson.loads
    return {"id": iid, "status": status, "finish_reason": finish,
            "request": loads(req) if req is not None else None,
            "response": loads(resp) if resp is not None else None,
            "rating": rating, "correction": loads(corr) if corr is not None else None}


def stream(engine: sa.Engine, filters: ExportFilters,
           batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Yield matching interactions as dicts (``RAW_COLUMNS``, JSON decoded)."""
    for rows in stream_batches(engine, filters, batch):
        for row in rows:
            yield decode(row)
