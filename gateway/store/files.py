"""Uploaded files (``/v1/files``): the rows here, the bytes on disk under ``$TUNELOOP_HOME/files``.

    row = store_file(engine, home, filename, content, purpose, project)   # bytes + row
    delete_file(engine, file_id)                                          # row + bytes
    store = FileStore(engine)
    store.create({...}); store.get(file_id); store.list(purpose=..., after=..., limit=..., order=...)
    store.delete(file_id)   # -> the row it removed, so the caller can remove the bytes

The ``files`` table comes from migration ``0003_fine_tuning``.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa

from gateway.store.schema import metadata

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")  # OpenAI's

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

    def usage(self, project: str | None) -> int:
        """Bytes stored by ``project`` (None: files made without one)."""
        owner = files.c.project.is_(None) if project is None else files.c.project == project
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(files.c.bytes), 0)).where(owner))
                       .scalar_one())

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


def store_file(engine: sa.Engine, home: Path, filename: str, content: bytes | BinaryIO, purpose: str,
               project: str | None = None) -> dict[str, Any]:
    """Write the bytes, or copy a file object in chunks (atomically: a temporary file, then a
    rename), and their row."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
    file_id = "file-" + secrets.token_hex(12)
    folder = Path(home) / "files"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_id
    tmp = folder / f".{file_id}.tmp"
    source = io.BytesIO(content) if isinstance(content, bytes) else content
    digest, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    os.replace(tmp, path)
    row = {"id": file_id, "filename": filename or file_id, "purpose": purpose, "bytes": size,
           "sha256": digest.hexdigest(), "path": str(path), "project": project}
    return FileStore(engine).create(row)


def delete_file(engine: sa.Engine, file_id: str) -> dict[str, Any] | None:
    """Remove the row, then the bytes; returns the row (None: no such file)."""
    row = FileStore(engine).delete(file_id)
    if row is not None:
        Path(row["path"]).unlink(missing_ok=True)
    return row
