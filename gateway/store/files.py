"""Uploaded files' metadata (``/v1/files``); the bytes live on disk under ``$TUNELOOP_HOME/files``.

    store = FileStore(engine)
    store.create({...}); store.get(file_id); store.list(purpose=..., after=..., limit=..., order=...)
    store.delete(file_id)   # -> the row it removed, so the caller can remove the bytes

The ``files`` table comes from migration ``0003_fine_tuning``.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from gateway.store.schema import metadata

files = sa.Table(
    "files", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("project", sa.String(128)),
    sa.Column("expires", sa.Float),
    sa.Index("ix_files_created", "created"),
)


class FileStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {"created": time.time(), **row}
        with self.engine.begin() as conn:
            conn.execute(files.insert().values(**row))
        return row

    def get(self, file_id: str, project: str | None = None) -> dict[str, Any] | None:
        """The file, or None (also when it belongs to another ``project``; None = any)."""
        q = files.select().where(files.c.id == file_id)
        if project is not None:
            q = q.where(files.c.project == project)
        with self.engine.connect() as conn:
            found = conn.execute(q).mappings().first()
        return dict(found) if found else None

    def list(self, purpose: str | None = None, after: str | None = None, limit: int = 10000,
             order: str = "desc", project: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        desc = order != "asc"
        key = (files.c.created.desc(), files.c.id.desc()) if desc else (files.c.created, files.c.id)
        q = files.select().order_by(*key)
        if project is not None:
            q = q.where(files.c.project == project)
        if purpose:
            q = q.where(files.c.purpose == purpose)
        anchor = self.get(after) if after else None
        if anchor is not None:
            cmp = (files.c.created < anchor["created"]) if desc else (files.c.created > anchor["created"])
            tie = (files.c.id < after) if desc else (files.c.id > after)
            q = q.where(sa.or_(cmp, sa.and_(files.c.created == anchor["created"], tie)))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q.limit(limit + 1)).mappings()]
        return rows[:limit], len(rows) > limit

    def delete(self, file_id: str) -> dict[str, Any] | None:
        row = self.get(file_id)
        if row is not None:
            with self.engine.begin() as conn:
                conn.execute(files.delete().where(files.c.id == file_id))
        return row
