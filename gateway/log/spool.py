"""Durable on-disk spool for records the database could not take (yet).

Layout: ``{home}/spool/spool-<time_ns>-<pid>.jsonl``, one JSON record per line, append
only. The owning process holds an exclusive ``flock`` on its active file, so replay in
another process (several gateway workers may share one home) never takes a file that
is still being written. A torn last line (a crash mid-write) is skipped on replay.
Replay is idempotent (INSERT ... ON CONFLICT DO NOTHING), so a crash between commit and
unlink only replays some records twice, harmlessly.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)

ROTATE_BYTES = 64 * 1024 * 1024  # bounded files: replay progress survives a new outage


def _dumps(record: Any) -> bytes:
    return orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self._dirty = False
        self.records = sum(self._count_lines(p) for p in self.files())  # for the gauge

    # ---- writing (the gateway on queue overflow or a dead child; the writer child) ----
    def append(self, records: Iterable[Any]) -> int:
        """Append records; all or none: a write that fails (ENOSPC) is cut back off and re-raised."""
        data = b"".join(_dumps(r) for r in records)
        n = data.count(b"\n")
        with self._lock:
            f = self._file or self._open()
            try:
                _write_all(f.fileno(), data)
            except OSError:
                _truncate(f.fileno(), self._size)  # no torn line for the next append to join
                raise
            self._size += len(data)
            self._dirty = True
            self.records += n
            if self._size >= ROTATE_BYTES:
                self._close_active()
        return n

    def flush(self) -> None:
        """fsync what was appended since the last flush (batched: once per writer pass)."""
        with self._lock:
            if self._file is not None and self._dirty:
                os.fsync(self._file.fileno())
                self._dirty = False

    def rotate(self) -> None:
        with self._lock:
            self._close_active()

    def _open(self) -> IO[bytes]:
        path = self.folder / f"spool-{time.time_ns():020d}-{os.getpid()}.jsonl"
        f = open(path, "ab", buffering=0)  # noqa: SIM115 - held open across calls; append writes whole
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name itself must survive a crash
        finally:
            os.close(dir_fd)
        self._file, self._path, self._size = f, path, 0
        return f

    def _close_active(self) -> None:
        if self._file is not None:
            try:
                os.fsync(self._file.fileno())
            finally:
                self._file.close()  # releases the flock: the file is now replayable
            self._file, self._path, self._dirty = None, None, False

    def close(self) -> None:
        self.rotate()

    # ---- replay ----
    def files(self) -> list[Path]:
        return sorted(self.folder.glob("spool-*.jsonl"))

    def pending(self) -> bool:
        """Whether closed or foreign files wait for replay (the active file is rotated first)."""
        return any(p != self._path for p in self.files()) or self._size > 0

    def replay(self, insert: Any, batch: int = 2000) -> int:
        """Feed every replayable file to ``insert(list_of_dicts)`` in order, then delete it.

        ``insert`` raising stops the replay (the file stays, to be replayed again later).
        """
        self.rotate()
        done = 0
        for path in self.files():
            done += self._replay_file(path, insert, batch)
        return done

    def _replay_file(self, path: Path, insert: Any, batch: int) -> int:
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return 0  # another process replayed it first
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # still being written by a live process, or being replayed
            n = 0
            for chunk in _batches(_read_records(f, path), batch):
                insert(chunk)
                n += len(chunk)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        with self._lock:
            self.records -= n  # may go below 0 for a foreign file; the gauge clamps the sum
        return n

    @staticmethod
    def _count_lines(path: Path) -> int:
        try:
            with open(path, "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        log.exception("spool: cannot cut a failed append back off")


def _read_records(f: IO[bytes], path: Path) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(f, 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("spool %s: skipping torn line %d", path.name, lineno)
            continue
        if isinstance(record, dict):
            yield record


def _batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_rejected(folder: Path, records: list[Any]) -> None:
    """Keep records the database refuses (bad data, not an outage) for a human to look at."""
    path = Path(folder) / f"rejected-{os.getpid()}.jsonl"
    with open(path, "ab") as f:
        f.write(b"".join(_dumps(r) for r in records))
        f.flush()
        os.fsync(f.fileno())
