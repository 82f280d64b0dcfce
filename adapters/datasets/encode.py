"""Log rows → encoded SFT lines, in this process or in worker processes.

``encode_sft(rows, ...)`` turns one batch of ``export.stream_batches`` tuples into what
the writer needs: the JSONL lines (scrubbed, serialized), their two 8-byte dedupe
digests, the record ids and how each line was made, plus the skip reasons and scrub
counts of the batch. It is stateless per batch (the scrubber's clean-prompt memory
aside), so batches can be encoded anywhere; the order-dependent steps (dedupe, split,
write) stay in the builder, which takes results back in batch order.

``Workers`` runs ``python -m adapters.datasets.encode`` subprocesses (no fork of the
caller, which may be a threaded server) and feeds them batches round-robin over their
stdin/stdout pipes (length-prefixed pickles), one batch in flight per worker: the
caller reads the database and writes files while the workers encode.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import traceback
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from adapters.datasets.dedupe import digest8, normalized_digest
from adapters.datasets.sft import sft_line
from gateway.scrub import Scrubber

# (lines, exact digests, near digests, ids, hows, dropped, scrub counts)
Encoded = tuple[list[bytes], list[bytes], list[bytes], list[str], list[str], dict[str, int],
                dict[str, int]]
_LEN = struct.Struct("<Q")
REPO = Path(__file__).resolve().parents[2]


def encode_sft(rows: Iterable[tuple[Any, ...]], scrubber: Scrubber | None,
               dedupe: bool) -> Encoded:
    loads, dumps = orjson.loads, orjson.dumps
    nl, sort_keys = orjson.OPT_APPEND_NEWLINE, orjson.OPT_SORT_KEYS
    scrub = scrubber.messages if scrubber is not None else None
    before = Counter(scrubber.counts) if scrubber is not None else Counter()
    dropped: Counter[str] = Counter()
    data: list[bytes] = []
    exact: list[bytes] = []
    near: list[bytes] = []
    ids: list[str] = []
    hows: list[str] = []
    for iid, status, finish, req, resp, _rating, corr in rows:
        if status != 200 or resp is None:
            dropped["failed"] += 1
            continue
        line, how = sft_line(status, loads(req) if req is not None else None, loads(resp),
                             loads(corr) if corr is not None else None, finish)
        if line is None:
            dropped[how] += 1
            continue
        msgs = line["messages"]
        if scrub is not None:
            scrub(msgs)
        data.append(dumps(line, option=nl))
        if dedupe:
            exact.append(digest8(dumps(line, option=sort_keys)))
            near.append(normalized_digest(msgs))
        ids.append(iid)
        hows.append(how)
    counts = scrubber.counts - before if scrubber is not None else Counter()
    return data, exact, near, ids, hows, dict(dropped), dict(counts)


def _send(f: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LEN.pack(len(data)))
    f.write(data)
    f.flush()


def _recv(f: IO[bytes]) -> Any:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("dataset encode worker closed its pipe")
    (n,) = _LEN.unpack(head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError("dataset encode worker closed its pipe")
    return pickle.loads(data)


class Workers:
    """``n`` encode workers; ``map(batches)`` yields ``Encoded`` results in batch order."""

    def __init__(self, n: int, scrub: bool, dedupe: bool) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(n):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "adapters.datasets.encode", "--worker",
                     "1" if scrub else "0", "1" if dedupe else "0"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO))
        except BaseException:
            self.close()
            raise

    def _result(self, p: subprocess.Popen[bytes]) -> Encoded:
        assert p.stdout is not None
        kind, value = _recv(p.stdout)
        if kind == "error":
            raise RuntimeError(f"dataset encode worker failed:\n{value}")
        return value

    def map(self, batches: Iterable[list[tuple[Any, ...]]]) -> Iterator[Encoded]:
        free = deque(self.procs)
        busy: deque[subprocess.Popen[bytes]] = deque()  # dispatch order
        for rows in batches:
            if free:
                p = free.popleft()
                _send(p.stdin, rows)  # type: ignore[arg-type]
                busy.append(p)
                continue
            p = busy.popleft()  # the oldest batch: results stay in order
            res = self._result(p)
            _send(p.stdin, rows)  # type: ignore[arg-type]
            busy.append(p)
            yield res
        while busy:
            yield self._result(busy.popleft())

    def close(self) -> None:
        for p in self.procs:
            try:
                if p.stdin is not None:
                    _send(p.stdin, None)
                    p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_main(scrub: bool, dedupe: bool) -> None:
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 20)
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    os.dup2(2, 1)  # a stray print must not corrupt the result pipe
    scrubber = Scrubber() if scrub else None
    while True:
        try:
            rows = _recv(inp)
        except EOFError:
            return
        if rows is None:
            return
        try:
            res: tuple[str, Any] = ("ok", encode_sft(rows, scrubber, dedupe))
        except Exception:
            res = ("error", traceback.format_exc())
        _send(out, res)
        if res[0] == "error":
            return


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2] == "1", sys.argv[3] == "1")
    else:
        raise SystemExit("usage: python -m adapters.datasets.encode --worker SCRUB DEDUPE")
