"""The ``datasets`` table and its lineage (``dataset_records``): what a build wrote.

    store = DatasetStore(engine)
    store.create(DatasetRow(...))              # the row, before its sources
    store.add_sources(ds_id, [(iid, "train"), ...])   # batched, any number of calls
    store.get(ds_id), store.list(), store.source_ids(ds_id)

``datasets`` itself is declared in ``schema.py`` (its 0002 columns included); the link
table ``dataset_records`` is declared here.
"""

from __future__ import annotations

import builtins  # inside DatasetStore, ``list`` is its method
import itertools
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from gateway.store.db import driver_connection
from gateway.store.schema import datasets, metadata  # one declaration, in schema.py

dataset_records = sa.Table(
    "dataset_records", metadata,
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("interaction_id", sa.String(96), primary_key=True),
    sa.Column("split", sa.String(8), nullable=False),
    sa.Index("ix_dataset_records_interaction", "interaction_id"),
)


def new_dataset_id() -> str:
    return "ds-" + secrets.token_hex(12)


@dataclass
class DatasetRow:
    id: str
    name: str
    kind: str
    path: str
    rows: int
    sha256: str
    source: str = "log"
    created: float = field(default_factory=time.time)
    project: str | None = None
    filters: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    val_path: str | None = None
    val_sha256: str | None = None
    val_rows: int | None = None
    counts: dict[str, Any] | None = None


class DatasetStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, row: DatasetRow) -> None:
        with self.engine.begin() as conn:
            conn.execute(datasets.insert().values(**asdict(row)))

    def add_sources(self, dataset_id: str, pairs: Iterable[tuple[str, str]],
                    batch: int = 5000) -> int:
        """Link ``(interaction_id, split)`` pairs to the dataset, in one transaction:
        ``COPY`` on PostgreSQL, DB-API ``executemany`` of ``batch`` rows elsewhere."""
        n = 0
        with self.engine.begin() as conn:
            raw = driver_connection(conn)
            if self.engine.dialect.name == "postgresql":
                with raw.cursor() as cur, cur.copy(
                        "COPY dataset_records (dataset_id, interaction_id, split) "
                        "FROM STDIN") as cp:
                    for iid, split in pairs:
                        cp.write_row((dataset_id, iid, split))
                        n += 1
                return n
            if self.engine.dialect.name != "sqlite":
                rows = ({"dataset_id": dataset_id, "interaction_id": iid, "split": split}
                        for iid, split in pairs)
                while chunk := list(itertools.islice(rows, batch)):
                    conn.execute(dataset_records.insert(), chunk)
                    n += len(chunk)
                return n
            sql = "INSERT INTO dataset_records (dataset_id, interaction_id, split) VALUES (?, ?, ?)"
            cur = raw.cursor()
            buf: list[tuple[str, str, str]] = []
            for iid, split in pairs:
                buf.append((dataset_id, iid, split))
                if len(buf) >= batch:
                    cur.executemany(sql, buf)
                    n += len(buf)
                    buf = []
            if buf:
                cur.executemany(sql, buf)
                n += len(buf)
            cur.close()
        return n

    def get(self, dataset_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(datasets).where(datasets.c.id == dataset_id)).first()
            if row is None:
                return None
            out = dict(row._mapping)
            out["source_records"] = conn.execute(
                sa.select(sa.func.count()).where(dataset_records.c.dataset_id == dataset_id)
            ).scalar_one()
        return out

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        cols = [c for c in datasets.c if c.name not in ("report", "filters")]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols).order_by(datasets.c.created.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def source_ids(self, dataset_id: str, split: str | None = None) -> builtins.list[str]:
        q = sa.select(dataset_records.c.interaction_id).where(
            dataset_records.c.dataset_id == dataset_id)
        if split is not None:
            q = q.where(dataset_records.c.split == split)
        with self.engine.connect() as conn:
            return list(conn.execute(q.order_by(dataset_records.c.interaction_id)).scalars())

    def datasets_of(self, interaction_id: str) -> builtins.list[str]:
        """Which datasets learned from this interaction."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(dataset_records.c.dataset_id).where(
                dataset_records.c.interaction_id == interaction_id)).scalars())
