"""Faults through the whole spooler, each against a real server: the faulty transport's
message ends in the right queue state with the reason, its status row says what went
wrong, and the other transport's mail goes out in the same Send/Receive."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.soak import soak

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_UPLOAD,
    PR_DISPLAY_NAME,
    PR_STATUS_STRING,
)
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store import QueueState
from tests.conftest import StoreBackend
from tests.servers.dovecot import DovecotServer, MailUser
from tests.servers.smtp import SmtpServer, SmtpServerFactory
from tests.servers.smtp_sink import SmtpSink

PASSWORD_ENV = "MAPISPOOL_FAULTS_PASSWORD"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def two_transports(tmp_path: Path, bad: dict[str, Any], good: SmtpServer) -> dict[str, Any]:
    """``bad`` takes address type BAD, listed first; ``good`` (aiosmtpd) takes SMTP."""
    return {
        "store": str(tmp_path / "store.db"),
        "send_immediately": False,
        "transports": {
            "bad": {"provider": "smtp", "address_types": ["BAD"], **bad},
            "good": {"provider": "smtp", "host": good.host, "port": good.port, "tls": "none"},
        },
    }


def run_isolated(data: dict[str, Any], good: SmtpServer) -> tuple[Any, str]:
    """Submit one message per transport (the faulty one first), flush once; return the
    faulty message's queue entry and its transport's status string."""
    with Session.logon(Profile.from_dict(data)) as session:
        doomed = session.submit(
            b"From: a@x.test\r\nSubject: doomed\r\n\r\nx\r\n", recipients=["BAD:b@x.test"]
        )
        fine = session.submit(b"From: a@x.test\r\nTo: c@x.test\r\nSubject: fine\r\n\r\ny\r\n")
        started = time.monotonic()
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert time.monotonic() - started < 15
        assert session.queue_entry(fine).state is QueueState.SENT
        rows = {row[PR_DISPLAY_NAME]: row for row in session.status_table()}
        return session.queue_entry(doomed), str(rows["bad"].get(PR_STATUS_STRING, ""))
    assert len(good.messages) == 1


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"connect_timeout": 1, "timeout": 1}, ["timed out"]),
        ({"connect_timeout": 5, "timeout": 1}, ["timed out"]),
    ],
)
def test_server_that_never_answers_times_out_without_blocking(
    tmp_path: Path,
    silent_server: int,
    smtp_server_factory: SmtpServerFactory,
    settings: dict[str, Any],
    words: list[str],
) -> None:
    """A server that accepts and never greets: the message waits to be retried with the
    timeout as its error; the other transport's message is sent in the same flush."""
    good = smtp_server_factory()
    bad = {"host": "127.0.0.1", "port": silent_server, "tls": "none", **settings}
    entry, status = run_isolated(two_transports(tmp_path, bad, good), good)
    assert entry.state is QueueState.RETRY
    for word in words:
        assert word in (entry.last_error or "").lower()
    assert status


def test_command_that_is_never_answered_times_out(
    tmp_path: Path, smtp_sink_factory: Any, smtp_server_factory: SmtpServerFactory
) -> None:
    """smtp-sink waits 5 s before answering RCPT; with a 1 s command timeout the message
    is retried, not lost, and the other transport's mail still goes."""
    sink: SmtpSink = smtp_sink_factory(delays={"RCPT": 5})
    good = smtp_server_factory()
    bad = {"host": sink.host, "port": sink.port, "tls": "none", "timeout": 1}
    entry, _status = run_isolated(two_transports(tmp_path, bad, good), good)
    assert entry.state is QueueState.RETRY
    assert "timed out" in (entry.last_error or "").lower()


def test_auth_failure_keeps_the_message_and_says_so(
    tmp_path: Path, smtp_server_factory: SmtpServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused AUTH: the message waits for a retry with an authentication error, the
    transport's row says so, and the other transport's message is sent."""
    server = smtp_server_factory(tls="starttls", auth=("user", "right"))
    good = smtp_server_factory()
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    bad = {
        "host": server.host,
        "port": server.port,
        "tls": "starttls",
        "ca_file": str(server.ca_file),
        "username": "user",
        "password_env": PASSWORD_ENV,
    }
    entry, status = run_isolated(two_transports(tmp_path, bad, good), good)
    assert entry.state is QueueState.RETRY
    assert "auth" in ((entry.last_error or "") + status).lower()
    assert server.messages == []


def _imap(tmp_path: Path, dovecot: DovecotServer, user: MailUser, store: dict[str, str]) -> Profile:
    """Dovecot's IMAP as the one transport; ``store``: the profile's store keys."""
    return Profile.from_dict(
        {
            **store,
            "send_immediately": False,
            "transports": {
                "in": {
                    "provider": "imap",
                    "host": dovecot.host,
                    "port": dovecot.imap_port,
                    "tls": "none",
                    "allow_plaintext_auth": True,
                    "username": user.name,
                    "password_env": PASSWORD_ENV,
                    "action": "delete",
                    "batch_size": 3,
                    "timeout": 10,
                }
            },
        }
    )


@pytest.mark.sqlite_only("a SQLite file on a full mount")
def test_disk_full_while_storing_inbound_deletes_nothing_on_the_server(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store sits on a 2 MB tmpfs; 12 messages of 300 kB arrive by IMAP with delete:
    the flush stores what fits and stops with 'disk is full'; no server copy of an
    unstored message is deleted; after the file system grows, the next flush stores the
    rest, each message exactly once."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    monkeypatch.setenv(PASSWORD_ENV, dovecot_user.password)
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        for n in range(12):
            dovecot.deliver(
                dovecot_user,
                f"From: f@x.test\r\nSubject: big {n}\r\nMessage-ID: <b{n}@x>\r\n\r\n".encode()
                + (b"%d" % n) * 150_000,
            )
        profile = _imap(tmp_path, dovecot, dovecot_user, {"store": str(mount / "store.db")})
        with Session.logon(profile) as session:
            result = session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
            stored = session.folder("Inbox").count()
        assert 0 < stored < 12
        error = result.transports["in"].error or ""
        assert "disk is full" in error or "full" in error.lower()
        assert len(dovecot.message_files(dovecot_user)) >= 12 - stored  # unstored ones kept
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        with Session.logon(profile) as session:
            session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
            subjects = sorted(m.subject for m in session.folder("Inbox").messages())
        assert subjects == sorted(f"big {n}" for n in range(12))
        assert dovecot.message_files(dovecot_user) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_imap_server_restarting_mid_batch_loses_and_duplicates_nothing(
    tmp_path: Path,
    store_backend: StoreBackend,
    dovecot: DovecotServer,
    dovecot_user: MailUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dovecot stops while a 30-message batch is being fetched, then starts again: the
    flush ends with a network error; the next (forced) one brings the rest, every message
    exactly once."""
    monkeypatch.setenv(PASSWORD_ENV, dovecot_user.password)
    for n in range(30):
        dovecot.deliver(
            dovecot_user,
            f"From: f@x.test\r\nSubject: r {n}\r\nMessage-ID: <r{n}@x>\r\n\r\nx\r\n".encode(),
        )
    profile = _imap(tmp_path, dovecot, dovecot_user, store_backend.options())
    with Session.logon(profile) as session:
        restarted = threading.Event()

        def on_new(_message: object) -> None:
            if not restarted.is_set():
                restarted.set()
                dovecot.stop()

        session.spooler.on_newmail(on_new)
        session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
        assert restarted.is_set()
        dovecot.start()
        # The transport marked itself offline after the network error; the next ordinary
        # flush gives it a ValidateState first, so it reconnects without FLUSH_FORCE.
        session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
        subjects = sorted(m.subject for m in session.folder("Inbox").messages())
    assert subjects == sorted(f"r {n}" for n in range(30))


def test_soak_small(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """The soak in small: 600 messages submitted while flushes run; all delivered once."""
    report = soak(tmp_path, smtp_sink, 600)
    assert (report.delivered, report.duplicated, report.lost) == (600, 0, 0), report.lines()
