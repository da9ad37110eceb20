"""Benchmark 3: submitting N messages through ``Session.submit`` against raw SQLite
inserts, one fsync'd WAL transaction per message on both sides. (``mapispool-sendmail``,
one process per message, is benchmark 6.)"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

from mapispool.session import Session

from .common import Row, Section, Sizes, measure, message, paired, settle_disk, stopwatch
from .queue import profile

BENCH = "submit"


def raw_sqlite(msgs: list[bytes], synchronous: str) -> float:
    """Each message and a queue row inserted in its own transaction (WAL)."""
    work = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
    try:
        conn = sqlite3.connect(work / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, content BLOB, at REAL)")
        conn.execute("CREATE TABLE queue (message_id INTEGER PRIMARY KEY, state TEXT)")
        settle_disk()
        with stopwatch() as t:
            for raw in msgs:
                conn.execute("BEGIN IMMEDIATE")
                cur = conn.execute("INSERT INTO messages (content, at) VALUES (?, 0)", (raw,))
                conn.execute("INSERT INTO queue VALUES (?, 'queued')", (cur.lastrowid,))
                conn.execute("COMMIT")
        conn.close()
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def session_submit(msgs: list[bytes]) -> float:
    work = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    try:
        transports = {"out": {"provider": "loopback"}}
        with Session.logon(profile(work / "store.db", transports)) as session:
            settle_disk()
            with stopwatch() as t:
                for raw in msgs:
                    session.submit(raw)
            queued = len(session.outgoing_queue())
        if queued != len(msgs):
            raise RuntimeError(f"{queued} of {len(msgs)} queued")
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: Sizes, dirs: object) -> Section:
    section = Section("3. Submit")
    print(f"== {section.title}", flush=True)
    n, runs = sizes.submit, sizes.runs
    msgs = [message(i) for i in range(n)]
    api, full = paired(
        runs,
        Row(BENCH, "Session.submit (bytes), synchronous=FULL", n),
        lambda: session_submit(msgs),
        Row(BENCH, "raw SQLite, 1 tx/msg, WAL, synchronous=FULL", n),
        lambda: raw_sqlite(msgs, "FULL"),
    )
    section.add(full)
    section.add(api)
    section.target("Session.submit / raw SQLite FULL per-transaction", api, full, 0.5)
    if not sizes.smoke:
        normal = measure(Row(BENCH, "raw SQLite, 1 tx/msg, WAL, synchronous=NORMAL", n),
                         1, lambda: raw_sqlite(msgs, "NORMAL"))  # fmt: skip
        section.add(normal)
        section.notes.append(
            "Both sides commit each message in its own fsync'd WAL transaction. The NORMAL "
            "row (one run, unpaired) shows what the fsync itself costs on this disk."
        )
    return section
