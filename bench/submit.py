"""Benchmark 3: submitting N messages through ``Session.submit`` against raw SQLite
inserts, one fsync'd WAL transaction per message on both sides, the two sides
interleaved block by block within each run. (``mapispool-sendmail``,
one process per message, is benchmark 6.)"""

from __future__ import annotations

import gc
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from mapispool.session import Session

from .common import Row, Section, Sizes, measure, message, settle_disk, stopwatch
from .queue import profile

BENCH = "submit"


#: Messages per block: the two sides alternate block by block within one run.
BLOCK = 100
#: Untimed messages each side submits first (the files, caches and the writer thread warm).
WARMUP = 100


class RawSqlite:
    """The baseline: each message and a queue row inserted in its own transaction (WAL)."""

    def __init__(self, work: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(work / "raw.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, content BLOB, at REAL)")
        self.conn.execute("CREATE TABLE queue (message_id INTEGER PRIMARY KEY, state TEXT)")

    def submit(self, raw: bytes) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        cur = self.conn.execute("INSERT INTO messages (content, at) VALUES (?, 0)", (raw,))
        self.conn.execute("INSERT INTO queue VALUES (?, 'queued')", (cur.lastrowid,))
        self.conn.execute("COMMIT")


def raw_sqlite(msgs: list[bytes], synchronous: str) -> float:
    """The baseline alone, every message in its own transaction; elapsed seconds."""
    work = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
    try:
        raw = RawSqlite(work, synchronous)
        settle_disk()
        with stopwatch() as t:
            for message_ in msgs:
                raw.submit(message_)
        raw.conn.close()
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def interleaved(msgs: list[bytes], flip: bool) -> tuple[float, float]:
    """One run of both sides, block by block: ``Session.submit`` of ``BLOCK`` messages,
    then the same messages into raw SQLite (the other way round when ``flip``), until
    each side has submitted every message; (session seconds, raw seconds).

    The fsync cost of this shared disk moves by several times within a minute; two
    sides measured one after the other (even in A, B pairs) saw different disks. Block
    by block, both sides see the same moments, so their ratio is like for like."""
    work = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    try:
        raw = RawSqlite(work, "FULL")
        transports = {"out": {"provider": "loopback"}}
        with Session.logon(profile(work / "store.db", transports)) as session:
            warm = msgs[:WARMUP]
            for message_ in warm:
                session.submit(message_)
                raw.submit(message_)
            settle_disk()
            api = base = 0.0
            for start in range(0, len(msgs), BLOCK):
                block = msgs[start : start + BLOCK]
                for side in (1, 0) if flip else (0, 1):
                    gc.collect()
                    began = time.perf_counter()
                    if side == 0:
                        for message_ in block:
                            session.submit(message_)
                        api += time.perf_counter() - began
                    else:
                        for message_ in block:
                            raw.submit(message_)
                        base += time.perf_counter() - began
            queued = len(session.outgoing_queue())
        raw.conn.close()
        if queued != len(msgs) + len(warm):
            raise RuntimeError(f"{queued} of {len(msgs) + len(warm)} queued")
        return api, base
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: Sizes, dirs: object) -> Section:
    section = Section("3. Submit")
    print(f"== {section.title}", flush=True)
    n, runs = sizes.submit, sizes.runs
    msgs = [message(i) for i in range(n)]
    api = Row(BENCH, "Session.submit (bytes), synchronous=FULL", n)
    full = Row(BENCH, "raw SQLite, 1 tx/msg, WAL, synchronous=FULL", n)
    api.base = full
    for run_ in range(runs):
        elapsed_api, elapsed_raw = interleaved(msgs, flip=bool(run_ % 2))
        api.times.append(elapsed_api)
        full.times.append(elapsed_raw)
    print(full.line(), flush=True)
    print(api.line(), flush=True)
    section.add(full)
    section.add(api)
    section.target("Session.submit / raw SQLite FULL per-transaction", api, full, 0.5)
    if not sizes.smoke:
        normal = measure(Row(BENCH, "raw SQLite, 1 tx/msg, WAL, synchronous=NORMAL", n),
                         1, lambda: raw_sqlite(msgs, "NORMAL"))  # fmt: skip
        section.add(normal)
        section.notes.append(
            "Both sides commit each message in its own fsync'd WAL transaction, after "
            f"{WARMUP} untimed messages each; within each run the two sides alternate "
            f"in blocks of {BLOCK} messages (the order flips from run to run), so both see "
            "the same moments of the disk. The NORMAL row (one run, unpaired) shows what "
            "the fsync itself costs on this disk."
        )
    return section
