"""Many ``mapispool serve`` workers on one PostgreSQL store (issue #12): they share the
queue (each message sent exactly once, none lost), one Send/Receive runs per store (a
third ``mapispool flush`` gets MAPI_E_BUSY, exit 75), ``mapispool status`` shows the live
workers, and with the database gone ``submit`` and ``sendmail`` exit 75."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import command, env, message, run, sendmail
from tests.acceptance.test_daemon_support import wait_until
from tests.servers.postgres import PgStoreLocation, PostgresServer
from tests.servers.smtp import SmtpServer

EX_TEMPFAIL = 75


def pg_profile(directory: Path, store: PgStoreLocation, smtp_port: int, *, extra: str = "") -> Path:
    """A profile on ``store`` with one ``smtp`` transport named ``out``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "profile.toml"
    path.write_text(
        f'store = "{store.url}"\nstore_schema = "{store.schema}"\n\n'
        f'[transports.out]\nprovider = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\n'
        f'tls = "none"\ntimeout = 30\n{extra}',
        encoding="utf-8",
    )
    return path


class Worker:
    """A ``mapispool serve --worker NAME`` subprocess logging to a file."""

    def __init__(self, profile: Path, name: str) -> None:
        self.name = name
        self.log = profile.parent / f"{name}.log"
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            command(profile, "serve", "--worker", name),
            stdout=subprocess.DEVNULL,
            stderr=self._out,
            env=env(),
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self) -> Worker:
        wait_until(lambda: "event=started" in self.text() or self.process.poll() is not None, 180)
        assert self.process.poll() is None, self.text()
        return self

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self._out.close()


def submit_many(profile: Path, count: int, first: int = 0) -> list[str]:
    """Submit ``count`` messages with ``mapispool submit``; their entry ids."""
    ids = []
    for i in range(first, first + count):
        done = run(profile, "submit", "-", stdin=message(f"m{i:03d}"))
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    return ids


def subjects(smtp: SmtpServer) -> Counter[str]:
    found: Counter[str] = Counter()
    for transaction in smtp.messages:
        for line in transaction.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found[line[9:].decode()] += 1
    return found


@pytest.mark.timeout(300)
def test_two_workers_drain_one_queue_each_message_exactly_once(
    tmp_path: Path, pg_store: PgStoreLocation, smtp_server: SmtpServer
) -> None:
    profile = pg_profile(tmp_path, pg_store, smtp_server.port)
    submit_many(profile, 8)  # queued before any worker runs
    workers = [Worker(profile, "alpha"), Worker(profile, "beta")]
    try:
        for worker in workers:
            worker.wait_started()
        status = run(profile, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        wait_until(lambda: _status_workers(profile) == {"alpha", "beta"}, 30)
        assert rows[0]["name"] == "Spooler"
        submit_many(profile, 12, 8)  # while both run: NOTIFY wakes them
        smtp_server.wait_for(20, timeout=90)
        queue = run(profile, "queue", "list", "--json")
        assert queue.returncode == 0, queue.stderr
        wait_until(lambda: json.loads(run(profile, "queue", "list", "--json").stdout) == [], 30)
    finally:
        codes = [worker.stop() for worker in workers]
    time.sleep(0.5)  # nothing more arrives after the drain
    sent = subjects(smtp_server)
    assert sent == Counter({f"m{i:03d}": 1 for i in range(20)})
    assert codes == [0, 0], [w.text() for w in workers]
    # A stopped worker's rows are gone from the one view.
    assert _status_workers(profile) == set()


def _status_workers(profile: Path) -> set[str]:
    done = run(profile, "status", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    return {name for row in rows for name in row.get("workers", [])}


def test_a_third_flush_is_busy_while_one_runs(
    tmp_path: Path, pg_store: PgStoreLocation, smtp_server_factory: object
) -> None:
    # The server holds every DATA until the test lets go, so that the first flush is
    # certainly still running when the third one starts, however slowly the machine
    # starts the CLI processes (a fixed delay made this test fail under load).
    # (The server calls this under its lock: the test must not read smtp.transactions
    # until it has let go.)
    held, release = threading.Event(), threading.Event()

    def held_ok(*_args: object) -> str:
        held.set()
        release.wait(180)
        return "250 OK"

    smtp = smtp_server_factory(data_answer=held_ok)  # type: ignore[operator]
    profile = pg_profile(tmp_path, pg_store, smtp.port)
    text = profile.read_text().replace(f'store_schema = "{pg_store.schema}"\n',
                                       f'store_schema = "{pg_store.schema}"\n'
                                       "send_immediately = false\n")  # fmt: skip
    profile.write_text(text)
    submit_many(profile, 3)
    workers = [Worker(profile, "alpha").wait_started(), Worker(profile, "beta").wait_started()]
    try:
        # A worker's Send/Receive (SIGUSR1, as cron or a person would ask for one).
        workers[0].process.send_signal(signal.SIGUSR1)
        assert held.wait(60), "the first flush never reached DATA"
        assert "event=flush-done" not in workers[0].text()
        third = run(profile, "flush")
        assert third.returncode == EX_TEMPFAIL, third.stderr
        assert "already running" in third.stderr
        assert len(third.stderr.strip().splitlines()) == 1, third.stderr
        # The other worker's own Send/Receive is skipped as busy, too.
        workers[1].process.send_signal(signal.SIGUSR1)
        wait_until(lambda: "event=flush-skipped" in workers[1].text(), 60)
        release.set()
        wait_until(lambda: "event=flush-done" in workers[0].text(), 120)
        waited = run(profile, "flush", "--wait", timeout=120)
        assert waited.returncode == 0, waited.stderr
    finally:
        release.set()
        for worker in workers:
            worker.stop()
    assert sorted(subjects(smtp).values()) == [1, 1, 1]


def test_the_database_gone_submit_and_sendmail_exit_75(
    tmp_path: Path, pg_store: PgStoreLocation, postgres_server: PostgresServer | None
) -> None:
    if postgres_server is None:
        pytest.skip("MAPISPOOL_TEST_PG names an outside server, which this test cannot stop")
    profile = pg_profile(tmp_path, pg_store, 9)
    assert run(profile, "submit", "-", stdin=message("before")).returncode == 0
    postgres_server.stop()
    try:
        submitted = run(profile, "submit", "-", stdin=message("lost?"), timeout=120)
        mailed = sendmail(["--profile", str(profile), "-t"], message("kept"), timeout=120)
    finally:
        postgres_server.start()
    assert submitted.returncode == EX_TEMPFAIL, submitted.stderr
    assert len(submitted.stderr.strip().splitlines()) == 1, submitted.stderr
    assert "PostgreSQL" in submitted.stderr
    assert mailed.returncode == EX_TEMPFAIL, mailed.stderr
    queue = run(profile, "queue", "list", "--json")
    assert queue.returncode == 0, queue.stderr
    assert len(json.loads(queue.stdout)) == 1
