"""``mapispool serve`` in a subprocess: other invocations talk to it through the control
socket; SIGUSR1 flushes; SIGTERM in the middle of a flush ends it cleanly."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import command, env, message, run, smtp_profile
from tests.servers.smtp import SmtpServer, SmtpTransaction


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


class Daemon:
    """A running ``mapispool serve``; its log lines go to a file."""

    def __init__(self, profile: Path) -> None:
        self.log = profile.with_name("daemon.log")
        self.socket = profile.with_name("store.db.sock")
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            command(profile, "serve"), stdout=subprocess.DEVNULL, stderr=self._log_file, env=env()
        )
        _wait(lambda: "event=started" in self.log.read_text() or self.process.poll() is not None)
        assert self.process.poll() is None, self.log.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=40)
        self._log_file.close()
        return code


def _serve(profile: Path) -> Iterator[Daemon]:
    daemon = Daemon(profile)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def eager(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Path, Daemon]]:
    """A daemon whose profile sends as messages arrive."""
    profile = smtp_profile(tmp_path, smtp.port, send_immediately=True)
    for daemon in _serve(profile):
        yield profile, daemon


@pytest.fixture
def lazy(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Path, Daemon]]:
    """A daemon whose profile waits for a Send/Receive."""
    profile = smtp_profile(tmp_path, smtp.port, send_immediately=False)
    for daemon in _serve(profile):
        yield profile, daemon


def test_socket_is_private_and_status_goes_through_it(eager: tuple[Path, Daemon]) -> None:
    """The control socket is mode 0600; status --json answers the daemon's live table."""
    profile, daemon = eager
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    done = run(profile, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in json.loads(done.stdout)] == ["Spooler", "out"]
    assert "event=request op=status" in daemon.log.read_text()


def test_submit_through_the_daemon_is_sent_at_once(
    eager: tuple[Path, Daemon], smtp: SmtpServer
) -> None:
    """With send_immediately the daemon sends a message submitted by another process."""
    profile, daemon = eager
    done = run(profile, "submit", stdin=message("now"))
    assert done.returncode == 0, done.stderr
    [sent] = smtp.wait_for(1, timeout=10)
    assert b"Subject: now" in sent.data
    assert "op=submit" in daemon.log.read_text()


def test_flush_and_sigusr1_through_the_daemon(lazy: tuple[Path, Daemon], smtp: SmtpServer) -> None:
    """flush talks to the daemon (a second spooler could not log on); SIGUSR1 flushes."""
    profile, daemon = lazy
    assert run(profile, "submit", stdin=message("one")).returncode == 0
    flushed = run(profile, "flush", "--json")
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["transports"][0]["sent"] == 1
    assert run(profile, "submit", stdin=message("two")).returncode == 0
    daemon.process.send_signal(signal.SIGUSR1)
    smtp.wait_for(2, timeout=10)
    _wait(lambda: "reason=SIGUSR1" in daemon.log.read_text())
    assert json.loads(run(profile, "queue", "list", "--json").stdout) == []


def test_sigterm_in_the_middle_of_a_flush_loses_nothing(tmp_path: Path, smtp: SmtpServer) -> None:
    """SIGTERM during a slow flush: exit 0, and every message is sent or still queued."""

    def slow(transaction: SmtpTransaction) -> str:
        time.sleep(0.4)
        return "250 2.0.0 OK"

    smtp.handler.data_answer = slow
    profile = smtp_profile(tmp_path, smtp.port)
    ids = {run(profile, "submit", stdin=message(f"m{n}")).stdout.strip() for n in range(5)}
    daemon = Daemon(profile)
    started = run(profile, "flush", "--async")
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    _wait(lambda: len(smtp.transactions) >= 1)
    assert daemon.stop() == 0, daemon.log.read_text()
    sent = len(smtp.messages)
    assert sent < 5
    queued = json.loads(run(profile, "queue", "list", "--json").stdout)
    assert {e["entry_id"] for e in queued} <= ids
    assert sent + len(queued) == 5
    assert {e["state"] for e in queued} <= {"queued", "retry"}


def test_the_same_json_with_and_without_the_daemon(tmp_path: Path, smtp: SmtpServer) -> None:
    """The commands and the daemon run the same operations (mapispool.app): what a
    command prints with --json in its own process is what it prints through the daemon."""
    profile = smtp_profile(tmp_path, smtp.port, send_immediately=False)
    queued = run(profile, "submit", "-", stdin=message("same answers"))
    assert queued.returncode == 0, queued.stderr
    entry_id = queued.stdout.strip()
    asks = [
        ("queue", "list", "--json"),
        ("queue", "list", "--all", "--json"),
        ("queue", "show", entry_id[:8], "--json"),
        ("folder", "list", "--json"),
        ("folder", "show", "Outbox", "--json"),
    ]

    def answers() -> list[object]:
        done = [run(profile, *ask) for ask in asks]
        assert all(r.returncode == 0 for r in done), [r.stderr for r in done]
        return [json.loads(r.stdout) for r in done]

    alone = answers()
    for daemon in _serve(profile):
        served = answers()
        assert "op=queue_list" in daemon.log.read_text()
    assert served == alone
    assert alone[0][0]["entry_id"] == entry_id
