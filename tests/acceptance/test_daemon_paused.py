"""A daemon that is alive but does not answer (stopped with SIGSTOP, or wedged) never
makes a client hang after its message is stored: ``sendmail``, ``submit`` and the Python
API's client-mode ``submit`` give up on the wake-up after a deadline, warn, and succeed,
because the message is in the store already; the daemon sends it once it runs again."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from mapispool import MapiError, Session
from mapispool.mapi import MAPI_E_BUSY
from tests.acceptance.test_cli_support import message, run
from tests.acceptance.test_daemon_support import Serve, write_profile
from tests.servers.smtp import SmtpServer

#: Only keeps a broken run from hanging the suite: the fixed client returns after its
#: wake-up deadline (10 s), the broken one never does (pytest-timeout ends it).
GUARD = 60.0


@pytest.fixture
def paused(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Path, Serve]]:
    """A daemon that sends as messages arrive, logged on to by a Python session, then
    stopped with SIGSTOP; it is continued (and stopped cleanly) at the end."""
    profile = write_profile(tmp_path, "store.db", smtp.port, eager=True)
    serve = Serve(profile).wait_started()
    try:
        yield profile, serve
    finally:
        os.kill(serve.process.pid, signal.SIGCONT)
        assert serve.stop() == 0, serve.text()


def test_clients_do_not_hang_on_a_paused_daemon(
    paused: tuple[Path, Serve], smtp: SmtpServer
) -> None:
    profile, serve = paused
    session = Session.logon(profile)
    try:
        assert session.mode == "client"
        os.kill(serve.process.pid, signal.SIGSTOP)

        sent = run(profile, "sendmail", "-t", stdin=message("by sendmail"), timeout=GUARD)
        assert sent.returncode == 0, sent.stderr
        assert "warning" in sent.stderr
        submitted = run(profile, "submit", "-", stdin=message("by submit"), timeout=GUARD)
        assert submitted.returncode == 0, submitted.stderr
        assert "warning" in submitted.stderr

        done = threading.Event()

        def submit() -> None:
            session.submit(message("by the API"))
            done.set()

        threading.Thread(target=submit, daemon=True).start()
        assert done.wait(GUARD), "Session.submit hung on a paused daemon"
    finally:
        os.kill(serve.process.pid, signal.SIGCONT)
        session.logoff()
    # Nothing is lost: the daemon, running again, sends all three.
    smtp.wait_for(3, timeout=GUARD)
    subjects = sorted(str(message_from_bytes(t.data)["Subject"]) for t in smtp.messages)
    assert subjects == ["by sendmail", "by submit", "by the API"]


def test_logon_beside_a_paused_daemon_is_busy_not_a_hang(paused: tuple[Path, Serve]) -> None:
    """``Session.logon`` asks the daemon whether it is there; one that does not answer
    within the deadline is treated like a spooler held by another program: MAPI_E_BUSY."""
    profile, serve = paused
    os.kill(serve.process.pid, signal.SIGSTOP)
    outcome: list[BaseException | str] = []

    def logon() -> None:
        try:
            Session.logon(profile).logoff()
            outcome.append("logged on")
        except BaseException as exc:  # reported to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=logon, daemon=True)
    worker.start()
    worker.join(GUARD)
    assert outcome, "Session.logon hung on a paused daemon"
    error = outcome[0]
    assert isinstance(error, MapiError), error
    assert error.hresult == MAPI_E_BUSY


def test_reading_commands_answer_from_the_store_when_the_daemon_does_not(
    paused: tuple[Path, Serve],
) -> None:
    """``queue list`` and ``status`` (like ``queue show`` and ``folder``) wait a bounded time
    for a stopped daemon, then warn and answer from the store (the daemon keeps it
    current), instead of hanging a monitoring script or a person's terminal."""
    profile, serve = paused
    queued = run(profile, "submit", "--send-at", "+1d", "-", stdin=message("later"))
    assert queued.returncode == 0, queued.stderr
    entry_id = queued.stdout.strip()
    os.kill(serve.process.pid, signal.SIGSTOP)
    listed = run(profile, "queue", "list", "--json", timeout=GUARD)
    assert listed.returncode == 0, listed.stderr
    assert "did not answer" in listed.stderr
    assert entry_id in listed.stdout
    status = run(profile, "status", "--json", timeout=GUARD)
    assert status.returncode == 0, status.stderr
    assert "Spooler" in status.stdout
