"""Issue #12's crash test with real ``mapispool serve --worker NAME`` processes on one
PostgreSQL store (tests/postgres/_serve_crash.py runs it: >= 100 kill -9, SIGSTOP past
the lease, submitters in other processes; then 0 lost, duplicates only among uncertain
messages, no late write of a fenced-off worker accepted), and the lease itself: a live
worker's heartbeat keeps its claim through a long SMTP transaction, a worker paused past
its lease loses it and its late outcome is refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from mapispool.store.model import QueueState
from mapispool.store.postgres import PostgresStore
from tests.acceptance.test_cli_support import message, run
from tests.acceptance.test_daemon_support import wait_until
from tests.postgres._serve_crash import CrashSettings, run_crash, slow_sink_answer
from tests.postgres.test_serve_workers import Worker, pg_profile
from tests.servers.postgres import PgStoreLocation
from tests.servers.smtp import SmtpTransaction

KILLS = int(os.environ.get("MAPISPOOL_PG_SERVE_CRASH_KILLS", "100"))
DROPPED = "another worker has the message now"


@pytest.mark.timeout(900)
def test_serve_workers_killed_and_paused_lose_nothing(
    tmp_path: Path, pg_store: PgStoreLocation, smtp_server_factory: object
) -> None:
    smtp = smtp_server_factory(data_answer=slow_sink_answer)  # type: ignore[operator]
    report = run_crash(pg_store.url, pg_store.schema, tmp_path, smtp, CrashSettings(kills=KILLS))
    print(report.summary())
    assert report.problems() == [], report.summary()
    assert report.kills >= KILLS
    assert report.pauses > 0
    assert report.submitted > 0
    assert report.sent + report.uncertain == report.submitted


def _entry(pg_store: PgStoreLocation, entry_id: str) -> tuple[QueueState, list[str]]:
    """The message's state and the kinds of its events, read from the store."""

    async def read() -> tuple[QueueState, list[str]]:
        store = await PostgresStore.open(pg_store.url, schema=pg_store.schema)
        try:
            eid = bytes.fromhex(entry_id)
            entry = await store.queue_entry(eid, with_recipients=False)
            return entry.state, [e.kind for e in await store.events(eid)]
        finally:
            await store.close()

    return asyncio.run(read())


def _workers_alive(profile: Path) -> set[str]:
    done = run(profile, "status", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    return {name for row in json.loads(done.stdout) for name in row.get("workers", [])}


def _submit(profile: Path, subject: str) -> str:
    done = run(profile, "submit", "-", stdin=message(subject), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.timeout(300)
def test_a_long_smtp_transaction_keeps_its_claim(
    tmp_path: Path, pg_store: PgStoreLocation, smtp_server_factory: object
) -> None:
    """The server takes 4 leases to answer DATA; the sending worker's heartbeat renews
    its claim all along, so the other worker never takes the message over."""
    smtp = smtp_server_factory(data_answer=_slow_ok)  # type: ignore[operator]
    profile = pg_profile(tmp_path, pg_store, smtp.port, extra="")
    profile.write_text(profile.read_text().replace("\n\n[", '\nstore_lease = "1s"\n\n[', 1))
    workers = [Worker(profile, "alpha").wait_started(), Worker(profile, "beta").wait_started()]
    try:
        entry_id = _submit(profile, "long")
        wait_until(lambda: _entry(pg_store, entry_id)[0] is QueueState.SENT, 120)
    finally:
        for worker in workers:
            worker.stop()
    _state, kinds = _entry(pg_store, entry_id)
    assert not [k for k in kinds if k.startswith("recovered-")], kinds
    assert kinds.count("offered") == 1, kinds
    assert len(smtp.messages) == 1
    assert not any(DROPPED in w.text() for w in workers)


def _slow_ok(_transaction: SmtpTransaction) -> str:
    threading.Event().wait(4.0)  # four leases of 1 s
    return "250 OK"


@pytest.mark.timeout(900)
def test_a_worker_paused_past_its_lease_loses_its_claim(
    tmp_path: Path, pg_store: PgStoreLocation, smtp_server_factory: object
) -> None:
    """SIGSTOP in the middle of DATA, for longer than the lease: the live worker marks the
    message uncertain (its hand-over had begun) and forgets the paused worker. Resumed
    (SIGCONT), the zombie gets the server's 250, but its outcome is refused (a late
    write with a stale fencing token): the message stays uncertain, sent once, and the
    zombie registers again as a live worker."""
    arrived, release = threading.Event(), threading.Event()

    def held(_transaction: SmtpTransaction) -> str:
        arrived.set()
        release.wait(600)
        return "250 OK"

    smtp = smtp_server_factory(data_answer=held)  # type: ignore[operator]
    profile = pg_profile(tmp_path, pg_store, smtp.port)
    profile.write_text(profile.read_text().replace("\n\n[", '\nstore_lease = "1s"\n\n[', 1))
    zombie = Worker(profile, "zombie").wait_started()
    live: Worker | None = None
    try:
        entry_id = _submit(profile, "paused")
        assert arrived.wait(180), zombie.text()
        zombie.process.send_signal(signal.SIGSTOP)
        live = Worker(profile, "live").wait_started()
        wait_until(lambda: _entry(pg_store, entry_id)[0] is QueueState.UNCERTAIN, 180)
        wait_until(lambda: _workers_alive(profile) == {"live"}, 180)
        zombie.process.send_signal(signal.SIGCONT)
        release.set()
        wait_until(lambda: DROPPED in zombie.text(), 180)
        wait_until(lambda: _workers_alive(profile) == {"live", "zombie"}, 180)
    finally:
        release.set()
        zombie.process.send_signal(signal.SIGCONT)
        for worker in (zombie, live):
            if worker is not None:
                worker.stop()
    state, kinds = _entry(pg_store, entry_id)
    assert state is QueueState.UNCERTAIN, kinds
    assert "recovered-uncertain" in kinds, kinds
    assert "sent" not in kinds, kinds
    assert len(smtp.messages) == 1
