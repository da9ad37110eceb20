"""Concurrency and load: many Send/Receive requests at once, from threads and processes;
one flush at a time per spooler; one spooler per store; a consistent store afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_UPLOAD,
    MAPI_E_BUSY,
    NOTIFY_END_INBOUND_FLUSH,
    MapiError,
)
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.spooler.flush import FlushResult
from mapispool.store import QueueState
from mapispool.testing import TransportScript
from tests.conftest import StoreBackend
from tests.sync_store import SyncStore

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def message(n: int) -> bytes:
    return f"From: a@x.test\r\nTo: b@x.test\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


def recording(backend: StoreBackend, script: TransportScript) -> Profile:
    return Profile.from_dict(
        {
            **backend.options(),
            "send_immediately": False,
            "transports": {"a": {"provider": "recording", "script": script}},
        }
    )


def overlapping(script: TransportScript) -> int:
    """The largest number of flushes in progress at once, from the transport's journal."""
    depth = peak = 0
    for call in script.journal.of("a", "flush_queues", "transport_notify"):
        if call.method == "flush_queues":
            depth += 1
        elif call.flags is not None and call.flags & NOTIFY_END_INBOUND_FLUSH:
            depth -= 1
        peak = max(peak, depth)
    return peak


def test_threads_flushing_at_once_get_busy_or_wait(store_backend: StoreBackend) -> None:
    """Eight threads ask for Send/Receive at once while others submit: each gets a result
    or MAPI_E_BUSY, those that ask to wait all get a result, flushes never overlap, and
    every message is sent exactly once."""
    script = TransportScript(submit_delay=0.002)
    outcomes: list[str] = []
    lock = threading.Lock()
    with Session.logon(recording(store_backend, script)) as session:
        for n in range(40):
            session.submit(message(n))

        def flusher(wait: bool) -> None:
            for _ in range(5):
                try:
                    result = session.spooler_status().flush_queues(
                        FLUSH_UPLOAD | FLUSH_DOWNLOAD, wait=wait
                    )
                except MapiError as exc:
                    kind = "busy" if exc.hresult == MAPI_E_BUSY and not wait else repr(exc)
                else:
                    assert isinstance(result, FlushResult)
                    kind = "waited" if wait else "ran"
                with lock:
                    outcomes.append(kind)

        def submitter(base: int) -> None:
            for n in range(base, base + 30):
                session.submit(message(n))

        threads = [threading.Thread(target=flusher, args=(i % 2 == 0,)) for i in range(8)]
        threads += [threading.Thread(target=submitter, args=(1000 * (i + 1),)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        session.spooler_status().flush_queues(FLUSH_UPLOAD, wait=True)
        assert outcomes.count("waited") == 20
        assert "busy" in outcomes
        assert set(outcomes) <= {"waited", "ran", "busy"}
        assert overlapping(script) == 1
        sent = [subject for subject, _ in script.sent]
        assert len(sent) == len(set(sent)) == 100
        assert session.outgoing_queue() == []
        assert session.folder("Sent Items").count() == 100


_SECOND = """
import json, sys
from mapispool.mapi import MapiError
from mapispool.profile import Profile
from mapispool.session import Session
try:
    Session.logon(Profile.from_dict(json.loads(sys.argv[1])))
except MapiError as exc:
    print(hex(exc.hresult & 0xFFFFFFFF), exc)
    sys.exit(3)
"""


@pytest.mark.sqlite_only("a PostgreSQL store takes many spoolers (tests/postgres/test_workers.py)")
def test_second_process_cannot_start_a_spooler(tmp_path: Path) -> None:
    """While one process runs the spooler, another one's logon fails with MAPI_E_BUSY
    explaining that a spooler already runs on this store."""
    data = {
        "store": str(tmp_path / "store.db"),
        "send_immediately": False,
        "transports": {"a": {"provider": "loopback"}},
    }
    with Session.logon(Profile.from_dict(data)):
        done = subprocess.run(
            [sys.executable, "-c", _SECOND, json.dumps(data)],
            env=ENV,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 3, done.stderr.decode(errors="replace")
    assert hex(MAPI_E_BUSY & 0xFFFFFFFF).encode() in done.stdout
    assert b"another spooler is already running" in done.stdout


_CLIENT = """
import asyncio, sys, time
from datetime import UTC, datetime
from mapispool.store import SqliteStore
from mapispool.submission import prepare

async def main():
    store = SqliteStore(sys.argv[1])
    for n in range(int(sys.argv[3])):
        raw = f"From: a@x.test\\r\\nTo: b@x.test\\r\\nSubject: {sys.argv[2]}-{n}\\r\\n\\r\\nx\\r\\n"
        prepared = prepare(raw.encode(), recipients=None, now=datetime.now(UTC))
        now = time.time()
        await store.submit(prepared.content, prepared.props, prepared.recipients,
                           submit_time=now, not_before=None, expires_at=now + 3600)
    await store.close()

asyncio.run(main())
"""


@pytest.mark.sqlite_only("SQLite's locking between client processes and the spooler")
def test_client_processes_submit_while_the_spooler_flushes(tmp_path: Path) -> None:
    """Three other processes write into the store while the spooler flushes again and
    again: every message is sent exactly once and the queue ends empty."""
    script = TransportScript()
    with Session.logon(recording(StoreBackend("sqlite", tmp_path, None), script)) as session:
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", _CLIENT, str(tmp_path / "store.db"), f"p{i}", "60"],
                env=ENV,
            )
            for i in range(3)
        ]
        while any(c.poll() is None for c in clients):
            session.spooler_status().flush_queues(FLUSH_UPLOAD, wait=True)
        assert all(c.returncode == 0 for c in clients)
        session.spooler_status().flush_queues(FLUSH_UPLOAD, wait=True)
        sent = [subject for subject, _ in script.sent]
        assert sorted(sent) == sorted(f"p{i}-{n}" for i in range(3) for n in range(60))
    store = SyncStore(tmp_path / "store.db")
    try:
        assert store.count_by_state() == {QueueState.SENT: 180}
    finally:
        store.close()
