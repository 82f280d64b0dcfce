"""The streaming build: log rows → SFT, DPO or prompt-completion lines → scrub → dedupe → split → files.

    result = build(engine, BuildOptions(fmt="sft", out=Path("train.jsonl")))

Rows stream from ``gateway.log.export.stream_batches`` (plain DB-API tuples, JSON as
text, read ahead by a thread) ``batch`` rows at a time; each batch is decoded once
(orjson), turned into lines, scrubbed, serialized and keyed (``encode.encode_sft`` for
SFT, ``prompt_completion.encode_prompt_completion`` for the legacy format), then deduplicated, split
and written in order, one write and one sha256 update
per file and batch. Files are temporary siblings renamed into place at the end; the ids
of the records behind every written line go to a temporary list on disk and then to
``dataset_records``. ``workers`` > 0 moves SFT encoding to worker processes (it did not
pay on the shared 2-core dev machine: see loadtests/results/datasets.md). What grows
with the log: the dedupe keys, 16 bytes per kept line (see ``dedupe``) and, for DPO,
the best/worst reply per rated prompt (see ``dpo``). SFT and DPO read only chat completions, the
``prompt_completion`` format only legacy text completions (``FORMATS``: ``ExportFilters.object``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa

from adapters.datasets.dedupe import Deduper, digest8, normalized_digest
from adapters.datasets.dpo import RatedPairs, correction_pair
from adapters.datasets.encode import Encoded, Workers, encode_sft
from adapters.datasets.prompt_completion import encode_prompt_completion
from adapters.datasets.split import BUCKETS
from gateway.log import export
from gateway.scrub import Scrubber
from gateway.store.datasets import DatasetRow, DatasetStore, new_dataset_id

# format -> the interactions it reads (their ``object``): chat and text completions never mix
FORMATS = {"sft": "chat.completion", "dpo": "chat.completion", "prompt_completion": "text_completion"}
ENCODERS = {"sft": encode_sft, "prompt_completion": encode_prompt_completion}


@dataclass
class BuildOptions:
    fmt: str  # "sft" | "dpo" | "prompt_completion"
    out: Path
    val_out: Path | None = None  # default: <out minus .jsonl>.val.jsonl
    val_fraction: float = 0.1
    filters: export.ExportFilters = field(default_factory=export.ExportFilters)
    scrub: bool = True
    dedupe: bool = True
    name: str | None = None
    progress: bool = True
    count_first: bool = True  # a COUNT(*) first, for the progress bar's total
    batch: int = 2000  # rows per fetch, lines per scrub/dedupe/write step (memory: ~25 KB a row in flight)
    prefetch: int = 2  # batches a reader thread fetches ahead (0: read inline)
    workers: int = 0  # SFT: encode worker processes (0: encode in-process; see encode.py)


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
        """Scrub, serialize and key the pending lines (DPO), then ``commit`` them."""
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
        self.commit(data, exact, near, [x[1] for x in pending], [x[2] for x in pending])

    def commit(self, data: list[bytes], exact: list[bytes], near: list[bytes],
               ids: list[Any], hows: list[str]) -> None:
        """Dedupe, split and write encoded lines, in order. ``ids[i]``: the record id
        behind line ``i`` (SFT) or the list of them (DPO); ``exact``/``near``: the
        lines' dedupe digests (empty without dedupe)."""
        dups = self.deduper.check_batch(exact, near) if self.opts.dedupe else None
        by_split: dict[str, list[bytes]] = {"train": [], "val": []}
        id_lines: list[str] = []
        dpo = self.opts.fmt == "dpo"
        val_buckets, blake = self._val_buckets, hashlib.blake2b
        kept, dropped = self.kept, self.dropped
        for i, rec in enumerate(ids):
            dup = dups[i] if dups is not None else None
            if dup is not None:
                dropped[dup] += 1
                continue
            key = rec if type(rec) is str else "|".join(rec)
            b = int.from_bytes(blake(key.encode(), digest_size=8).digest(), "little") % BUCKETS
            split = "val" if b < val_buckets else "train"
            by_split[split].append(data[i])
            kept[hows[i]] += 1
            if type(rec) is str:
                id_lines.append(f"{rec}\t{split}\n")
                continue
            for iid in rec:
                if dpo:
                    if iid in self.linked:
                        continue
                    self.linked.add(iid)
                id_lines.append(f"{iid}\t{split}\n")
        for split, lines in by_split.items():
            self.outs[split].write_lines(lines)
        self.ids_file.write("".join(id_lines))

    def take(self, enc: Encoded) -> None:
        """An ``encode_sft`` result: its counts, then its lines."""
        data, exact, near, ids, hows, dropped, scrubbed = enc
        self.dropped.update(dropped)
        self.scrubber.counts.update(scrubbed)
        self.commit(data, exact, near, ids, hows)


def _batches(engine: sa.Engine, opts: BuildOptions) -> Iterator[list[tuple[Any, ...]]]:
    batches = export.stream_batches(engine, opts.filters, batch=opts.batch,
                                    prefetch=opts.prefetch)
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
    """Rows → lines through ``p``; returns how many rows were read."""
    if opts.fmt == "dpo":
        return _run_dpo(engine, opts, p)
    read = 0
    batches = iter(_batches(engine, opts))
    first = next(batches, [])
    read += len(first)
    if opts.fmt != "sft" or opts.workers <= 0 or len(first) < opts.batch:  # a small log: no workers
        encode = ENCODERS[opts.fmt]
        scrubber = p.scrubber if opts.scrub else None
        for rows in itertools.chain([first], batches):
            if rows is not first:
                read += len(rows)
            data, exact, near, ids, hows, dropped, _ = encode(rows, scrubber, opts.dedupe)
            p.dropped.update(dropped)
            p.commit(data, exact, near, ids, hows)
        return read

    def counted() -> Iterator[list[tuple[Any, ...]]]:
        nonlocal read
        yield first
        for rows in batches:
            read += len(rows)
            yield rows

    with Workers(opts.workers, opts.scrub, opts.dedupe) as workers:
        for enc in workers.map(counted()):
            p.take(enc)
    return read


def _run_dpo(engine: sa.Engine, opts: BuildOptions, p: _Pipeline) -> int:
    read = 0
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


def _source(line: str) -> tuple[str, str]:
    """An ids-file line, ``interaction_id<TAB>split``."""
    iid, _, split = line.rstrip("\n").partition("\t")
    return iid, split


def build(engine: sa.Engine, opts: BuildOptions) -> dict[str, Any]:
    """Build the files, record the dataset; returns the report (with ``dataset_id``)."""
    if opts.fmt not in FORMATS:
        raise ValueError(f"unknown format {opts.fmt!r} (sft, dpo or prompt_completion)")
    opts = replace(opts, filters=replace(opts.filters, object=FORMATS[opts.fmt]))
    with tempfile.TemporaryFile("w+", encoding="utf-8") as ids_file:
        p = _Pipeline(opts, ids_file)
        try:
            read = _run(engine, opts, p)
        except BaseException:
            for o in p.outs.values():
                o.abort()
            raise
        finally:
            p.deduper.close()
        for o in p.outs.values():
            o.commit()
        train, val = p.outs["train"], p.outs["val"]
        written = {"train": train.rows, "val": val.rows}
        report = {
            "format": opts.fmt, "read": read, "written": written,
            "kept": dict(p.kept), "dropped": dict(p.dropped),
            "scrubbed": dict(p.scrubber.counts), "filters": opts.filters.to_dict(),
            "val_fraction": opts.val_fraction,
        }
        ds = DatasetRow(
            id=new_dataset_id(), name=opts.name or opts.out.name, kind=opts.fmt,
            path=str(opts.out.resolve()), rows=train.rows, sha256=train.sha.hexdigest(),
            source="log", project=opts.filters.project, filters=opts.filters.to_dict(),
            report=report, val_path=str(val.path.resolve()), val_sha256=val.sha.hexdigest(),
            val_rows=val.rows, counts={"read": read, **written})
        store = DatasetStore(engine)
        store.create(ds)
        ids_file.seek(0)
        store.add_sources(ds.id, (_source(ln) for ln in ids_file))
    report.update(dataset_id=ds.id, path=ds.path, sha256=ds.sha256, val_path=ds.val_path,
                  val_sha256=ds.val_sha256)
    return report
