"""Benchmark 3: submitting N messages through ``Session.submit`` and through
``mapispool sendmail``, against raw SQLite inserts, one WAL transaction per message."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from mapispool.session import Session

from .common import Row, Section, Sizes, measure, message, settle_disk, skipped, stopwatch
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


def cli_sendmail(msgs: list[bytes]) -> float:
    """``mapispool sendmail -t`` once per message, with no spooler running (queues into
    the store directly, as a cron job would)."""
    binary = Path(sys.executable).parent / "mapispool"
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        (work / "profile.toml").write_text(
            f'store = "{work / "store.db"}"\nsend_immediately = false\n'
            '[transports.out]\nprovider = "loopback"\n'
        )
        args = [str(binary), "sendmail", "--profile", str(work / "profile.toml"), "-t", "-i"]
        settle_disk()
        with stopwatch() as t:
            for raw in msgs:
                subprocess.run(args, input=raw, check=True, stdout=subprocess.DEVNULL)
        return t[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: Sizes, dirs: object) -> Section:
    section = Section("3. Submit")
    print(f"== {section.title}", flush=True)
    n, runs = sizes.submit, sizes.runs
    msgs = [message(i) for i in range(n)]
    full = section.add(measure(Row(BENCH, "raw SQLite, 1 tx/msg, WAL, synchronous=FULL", n),
                               runs, lambda: raw_sqlite(msgs, "FULL")))  # fmt: skip
    section.add(measure(Row(BENCH, "raw SQLite, 1 tx/msg, WAL, synchronous=NORMAL", n),
                        runs, lambda: raw_sqlite(msgs, "NORMAL")))  # fmt: skip
    api = section.add(measure(Row(BENCH, "Session.submit (bytes)", n, base=full), runs,
                              lambda: session_submit(msgs)))  # fmt: skip
    section.target("Session.submit / raw SQLite FULL per-transaction", api, full, 0.3)
    if (Path(sys.executable).parent / "mapispool").exists():
        few = msgs[: sizes.cli_submit]
        try:
            section.add(measure(Row(BENCH, "mapispool sendmail -t, one process each",
                                    len(few), base=full), runs,
                                lambda: cli_sendmail(few)))  # fmt: skip
        except subprocess.CalledProcessError as exc:
            section.add(skipped(BENCH, "mapispool sendmail", len(few), f"failed: {exc}"))
    else:
        section.add(skipped(BENCH, "mapispool sendmail", sizes.cli_submit, "no CLI installed"))
    return section
