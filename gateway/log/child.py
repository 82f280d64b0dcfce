"""The log-writer child process: every database write of the interaction log runs here.

    python -m gateway.log.child URL HOME BATCH PROBE DB_UP RX_FD TX_FD

Started and watched by ``Relay`` (relay.py), never by hand. It reads orjson messages
from the gateway on RX_FD and answers on TX_FD:

    in:  ["b", seq, [record, ...]]   a batch          out: ["ack", [seq, ...], [bid, ...], status]
         ["s", [bid, ...]]           a sync barrier        ["hello", status] once, at start
         ["c"]                       close                 ["closed", status] last

A batch is acknowledged once it is committed or fsynced in the spool (while the DB is
down and the spool cannot be written, acknowledgements wait: ``Writer.held``); a barrier
once the DB is up and every batch before it is committed. The child says something at
least every ``STATUS_EVERY_S`` (a status when idle, also between the batches of a long
replay): the gateway replaces a child that stays silent (``relay.py``'s watchdog). The child drives the same
``Writer`` as the in-process design (spool while down, probe, replay), only without
its thread. It may use every CPU: the gateway process is often pinned to one core,
and this work must not compete with the event loop for it or for the GIL.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from gateway.log import metrics
from gateway.log.sink import Sink
from gateway.log.spool import Spool
from gateway.log.writer import Writer, spool_folder
from gateway.store import db

log = logging.getLogger("gateway.log.child")

STATUS_EVERY_S = 0.5  # idle heartbeat: keeps db_up and the gauges fresh in the gateway


class Child:
    def __init__(self, writer: Writer, rx: Connection, tx: Connection,
                 tally: metrics.Tally, batch_size: int) -> None:
        self.writer, self.rx, self.tx, self.tally = writer, rx, tx, tally
        self.batch_size = batch_size
        self.barriers: list[int] = []  # barriers waiting for the DB to come back
        self.waiting: list[int] = []  # batches not acknowledged while the writer holds records
        self._last_sent = 0.0
        writer.beat = self.beat

    def status(self) -> dict[str, Any]:
        return {"db_up": self.writer.db_up, "spool": self.writer.spool.records,
                "held": self.writer.held, **self.tally.take()}

    def send(self, msg: list[Any]) -> None:
        self.tx.send_bytes(orjson.dumps(msg))
        self._last_sent = time.monotonic()

    def beat(self) -> None:
        """Between the batches of a long write or replay: a status, so the watchdog sees us alive."""
        if time.monotonic() - self._last_sent > STATUS_EVERY_S:
            self.send(["ack", [], [], self.status()])

    def run(self) -> None:
        self.send(["hello", self.status()])
        self.writer.tick()  # replays any spool a previous process (or child) left
        while True:
            msgs, eof = self._receive()
            seqs, records, closing = [], [], eof
            for msg in msgs:
                if msg[0] == "b":
                    seqs.append(msg[1])
                    records.extend(msg[2])
                elif msg[0] == "s":
                    self.barriers.extend(msg[1])
                else:
                    closing = True
            if records:
                self.writer.write_batch(records)  # raising kills the child: the gateway spools
            self.writer.tick()
            self.waiting += seqs
            seqs = []
            if not self.writer.held:
                seqs, self.waiting = self.waiting, []
            released: list[int] = []
            if self.writer.db_up and not self.writer.held:
                released, self.barriers = self.barriers, []
            if seqs or released or time.monotonic() - self._last_sent > STATUS_EVERY_S:
                self.send(["ack", seqs, released, self.status()])
            if closing:
                self.writer.finish()
                if not eof:
                    self.send(["closed", self.status()])
                return

    def _receive(self) -> tuple[list[list[Any]], bool]:
        """Whatever has arrived (up to about one DB batch), waiting a probe interval at most."""
        msgs: list[list[Any]] = []
        n = 0
        try:
            wait = min(self.writer.probe_interval, STATUS_EVERY_S) if not self.barriers else 0.05
            if not self.rx.poll(wait):
                return msgs, False
            while n < self.batch_size:
                msg = orjson.loads(self.rx.recv_bytes())
                msgs.append(msg)
                n += len(msg[2]) if msg[0] == "b" else 0
                if msg[0] == "c" or not self.rx.poll(0):
                    break
        except EOFError:  # the gateway died without closing us: finish, then exit
            return msgs, True
        return msgs, False


def main(argv: list[str]) -> None:
    url, home, batch, probe, db_up, rx_fd, tx_fd = argv
    # The gateway decides when we stop (it closes our pipe); a terminal's Ctrl-C or a
    # SIGTERM to the process group must not kill us before we have flushed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # not pinned with the gateway: all CPUs, or TUNELOOP_LOG_WRITER_CPUS (e.g. "0" or "2,3")
        cpus = os.environ.get("TUNELOOP_LOG_WRITER_CPUS")
        os.sched_setaffinity(0, [int(c) for c in cpus.split(",")] if cpus else range(os.cpu_count() or 1))
    except (AttributeError, OSError, ValueError):
        pass
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s log-writer %(levelname)s %(message)s")
    tally = metrics.relay()
    engine = db.create_engine(url)
    up = db_up == "1"
    sink = Sink(engine, prepare=None if up else (lambda: db.upgrade(engine)))
    writer = Writer(sink, Spool(spool_folder(Path(home))), batch_size=int(batch),
                    probe_interval=float(probe))
    writer.db_up = up
    rx = Connection(int(rx_fd), writable=False)
    tx = Connection(int(tx_fd), readable=False)
    try:
        Child(writer, rx, tx, tally, int(batch)).run()
    finally:
        engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
