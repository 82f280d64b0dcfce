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

from adapters.datasets.dedupe import Deduper
from adapters.datasets.dpo import RatedPairs, correction_pair
from adapters.datasets.scrub import Scrubber
from adapters.datasets.sft import sft_example
from adapters.datasets.split import split_of
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
    batch: int = 2000


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
        self.f: IO[bytes] = os.fdopen(fd, "wb", buffering=1 << 20)
        self.sha = hashlib.sha256()
        self.rows = 0

    def write(self, line: dict[str, Any]) -> None:
        data = orjson.dumps(line) + b"\n"
        self.f.write(data)
        self.sha.update(data)
        self.rows += 1

    def commit(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class _Pipeline:
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

    def emit(self, line: dict[str, Any], ids: list[str], how: str) -> None:
        if self.opts.scrub:
            if "messages" in line:
                self.scrubber.messages(line["messages"])
            else:
                self.scrubber.messages(line["input"]["messages"])
                self.scrubber.messages(line["preferred_output"])
                self.scrubber.messages(line["non_preferred_output"])
        if self.opts.dedupe:
            msgs = line.get("messages") or [*line["input"]["messages"],
                                            *line["preferred_output"],
                                            *line["non_preferred_output"]]
            dup = self.deduper.check(line, msgs)
            if dup:
                self.dropped[dup] += 1
                return
        split = split_of("|".join(ids), self.opts.val_fraction)
        self.outs[split].write(line)
        self.kept[how] += 1
        for iid in ids:
            if self.opts.fmt == "dpo":
                if iid in self.linked:
                    continue
                self.linked.add(iid)
            self.ids_file.write(f"{iid}\t{split}\n")


def _rows(engine: sa.Engine, opts: BuildOptions) -> Iterator[dict[str, Any]]:
    rows = export.stream(engine, opts.filters, batch=opts.batch)
    if not opts.progress:
        return rows
    from tqdm import tqdm

    total = export.count(engine, opts.filters) if opts.count_first else None
    return iter(tqdm(rows, total=total, unit="rec", desc=f"dataset {opts.fmt}", mininterval=0.5))


def _run(engine: sa.Engine, opts: BuildOptions, p: _Pipeline) -> int:
    read = 0
    rated = RatedPairs() if opts.fmt == "dpo" else None
    for row in _rows(engine, opts):
        read += 1
        if rated is None:
            line, how = sft_example(row)
            if line is None:
                p.dropped[how] += 1
            else:
                p.emit(line, [row["id"]], how)
            continue
        if row.get("correction") is not None:
            line, how = correction_pair(row)
            if line is not None:
                p.emit(line, [row["id"]], how)
            elif how != "no_correction":
                p.dropped[how] += 1
        if not rated.add(row) and row.get("correction") is None:
            p.dropped["no_preference"] += 1
    if rated is not None:
        for line, ids in rated.pairs():
            p.emit(line, ids, "rating_pair")
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
