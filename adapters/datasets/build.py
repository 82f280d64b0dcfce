"""The streaming build: log rows → SFT or DPO lines → scrub → dedupe → split → files.

    result = build(engine, BuildOptions(fmt="sft", out=Path("train.jsonl")))

Rows stream from ``gateway.log.export`` (flat memory); lines are written as they come
to temporary files renamed into place at the end, hashed (sha256) on the way; the ids
of the records behind every written line go to a temporary list on disk and then to
``dataset_records``. What grows with the log: the dedupe keys (see ``dedupe``) and,
for DPO, the best/worst reply per rated prompt (see ``dpo``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa

from adapters.datasets.dedupe import Deduper, digest8, normalized_digest
from adapters.datasets.dpo import RatedPairs, correction_pair
from adapters.datasets.scrub import Scrubber
from adapters.datasets.sft import sft_line
from adapters.datasets.split import BUCKETS
from gateway.log import export
from gateway.log.datasets import DatasetRow, DatasetStore, new_dataset_id


@dataclass
class BuildOptions:
    fmt: str  # "sft" | "dpo"
    out: Path
    val_out: Path | None = None  # default: <out minus .jsonl>.val.jsonl
    val_fraction: float = 0.1
    filters: export.ExportFilters = field(default_factory=export.ExportFilters)
    scrub: bool = True
    dedupe: bool = True
    name: str | None = None
    progress: bool = True
    count_first: bool = True  # a COUNT(*) first, for the progress bar's total
    batch: int = 5000  # rows per fetch, lines per scrub/dedupe/write step


def default_val_path(out: Path) -> Path:
    stem = out.name[:-len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".val.jsonl")


class _Output:
    """One split's file: written to a temp sibling, hashed as written, renamed at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self.tmp = Path(tmp)
        self.f: IO[bytes] = os.fdopen(fd, "wb", buffering=0)
        self.sha = hashlib.sha256()
        self.rows = 0

    def write_lines(self, lines: list[bytes]) -> None:
        """Lines already ending in ``\\n``: one write and one hash update per batch."""
        if not lines:
            return
        data = b"".join(lines)
        self.f.write(data)
        self.sha.update(data)
        self.rows += len(lines)

    def write(self, line: dict[str, Any]) -> None:
        self.write_lines([orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)])

    def commit(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class _Pipeline:
    """Lines in, in order: scrub → dedupe → split → write, a batch at a time."""

    def __init__(self, opts: BuildOptions, ids_file: IO[str]) -> None:
        self.opts = opts
        self.scrubber = Scrubber()
        self.deduper = Deduper()
        self.dropped: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()
        self.outs = {"train": _Output(opts.out),
                     "val": _Output(opts.val_out or default_val_path(opts.out))}
        self.ids_file = ids_file
        self.linked: set[str] = set()  # DPO only: a record may back two pairs
        self._pending: list[tuple[dict[str, Any], list[str], str]] = []
        self._val_buckets = round(opts.val_fraction * BUCKETS)

    def emit(self, line: dict[str, Any], ids: list[str], how: str) -> None:
        self._pending.append((line, ids, how))
        if len(self._pending) >= self.opts.batch:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        scrub = self.scrubber.messages if self.opts.scrub else None
        dumps, sort_keys, nl = orjson.dumps, orjson.OPT_SORT_KEYS, orjson.OPT_APPEND_NEWLINE
        data: list[bytes] = []
        exact: list[bytes] = []
        near: list[bytes] = []
        for line, _ids, _how in pending:
            msgs = line.get("messages")
            if msgs is None:
                msgs = [*line["input"]["messages"], *line["preferred_output"],
                        *line["non_preferred_output"]]
            if scrub is not None:
                scrub(msgs)  # in place: the messages are the line's own dicts
            data.append(dumps(line, option=nl))
            if self.opts.dedupe:
                exact.append(digest8(dumps(line, option=sort_keys)))
                near.append(normalized_digest(msgs))
        dups = self.deduper.check_batch(exact, near) if self.opts.dedupe else None
        by_split: dict[str, list[bytes]] = {"train": [], "val": []}
        id_lines: list[str] = []
        dpo = self.opts.fmt == "dpo"
        val_buckets, blake = self._val_buckets, hashlib.blake2b
        for i, (_line, ids, how) in enumerate(pending):
            if dups is not None and dups[i] is not None:
                self.dropped[dups[i]] += 1
                continue
            key = ids[0] if len(ids) == 1 else "|".join(ids)
            b = int.from_bytes(blake(key.encode(), digest_size=8).digest(), "little") % BUCKETS
            split = "val" if b < val_buckets else "train"
            by_split[split].append(data[i])
            self.kept[how] += 1
            for iid in ids:
                if dpo:
                    if iid in self.linked:
                        continue
                    self.linked.add(iid)
                id_lines.append(f"{iid}\t{split}\n")
        for split, lines in by_split.items():
            self.outs[split].write_lines(lines)
        self.ids_file.write("".join(id_lines))


def _batches(engine: sa.Engine, opts: BuildOptions) -> Iterator[list[tuple[Any, ...]]]:
    batches = export.stream_batches(engine, opts.filters, batch=opts.batch)
    if not opts.progress:
        yield from batches
        return
    from tqdm import tqdm

    total = export.count(engine, opts.filters) if opts.count_first else None
    with tqdm(total=total, unit="rec", desc=f"dataset {opts.fmt}", mininterval=0.5) as bar:
        for rows in batches:
            yield rows
            bar.update(len(rows))


def _run(engine: sa.Engine, opts: BuildOptions, p: _Pipeline) -> int:
    read = 0
    loads = orjson.loads
    if opts.fmt == "sft":
        emit, dropped = p.emit, p.dropped
        for rows in _batches(engine, opts):
            read += len(rows)
            for iid, status, finish, req, resp, _rating, corr in rows:
                if status != 200 or resp is None:
                    dropped["failed"] += 1
                    continue
                line, how = sft_line(status, loads(req) if req is not None else None,
                                     loads(resp), loads(corr) if corr is not None else None,
                                     finish)
                if line is None:
                    dropped[how] += 1
                else:
                    emit(line, [iid], how)
        p.flush()
        return read
    rated = RatedPairs()
    for rows in _batches(engine, opts):
        read += len(rows)
        for raw in rows:
            row = export.decode(raw)
            if row.get("correction") is not None:
                line, how = correction_pair(row)
                if line is not None:
                    p.emit(line, [row["id"]], how)
                elif how != "no_correction":
                    p.dropped[how] += 1
            if not rated.add(row) and row.get("correction") is None:
                p.dropped["no_preference"] += 1
    for line, ids in rated.pairs():
        p.emit(line, ids, "rating_pair")
    p.flush()
    return read


def build(engine: sa.Engine, opts: BuildOptions) -> dict[str, Any]:
    """Build the files, record the dataset; returns the report (with ``dataset_id``)."""
    if opts.fmt not in ("sft", "dpo"):
        raise ValueError(f"unknown format {opts.fmt!r} (sft or dpo)")
    with tempfile.TemporaryFile("w+", encoding="utf-8") as ids_file:
        p = _Pipeline(opts, ids_file)
        try:
            read = _run(engine, opts, p)
        except BaseException:
            for o in p.outs.values():
                o.abort()
            raise
        for o in p.outs.values():
            o.commit()
        train, val = p.outs["train"], p.outs["val"]
        report = {
            "format": opts.fmt, "read": read,
            "written": {"train": train.rows, "val": val.rows},
            "kept": dict(p.kept), "dropped": dict(p.dropped),
            "scrubbed": dict(p.scrubber.counts), "filters": opts.filters.to_dict(),
            "val_fraction": opts.val_fraction,
        }
        ds = DatasetRow(
            id=new_dataset_id(), name=opts.name or opts.out.name, kind=opts.fmt,
            path=str(opts.out.resolve()), rows=train.rows, sha256=train.sha.hexdigest(),
            source="log", project=opts.filters.project, filters=opts.filters.to_dict(),
            report=report, val_path=str(val.path.resolve()), val_sha256=val.sha.hexdigest(),
            val_rows=val.rows, counts={"read": read, **report["written"]})
        store = DatasetStore(engine)
        store.create(ds)
        ids_file.seek(0)
        store.add_sources(ds.id, (tuple(ln.rstrip("\n").split("\t", 1)) for ln in ids_file))
    report.update(dataset_id=ds.id, path=ds.path, sha256=ds.sha256, val_path=ds.val_path,
                  val_sha256=ds.val_sha256)
    return report
