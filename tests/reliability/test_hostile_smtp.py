"""Hostile SMTP replies (issue #10, items 1 and 9), end to end through a real spooler and
a small fake server on loopback (``tests/servers/hostile_smtp.py``).

* A refusal whose text is not UTF-8 (a Latin-1 ``550 Empfänger unbekannt``) fails the
  recipient with an NDR that shows the reply; it is never recorded as sent.
* The same bytes in a 451 to MAIL leave the message waiting for a retry, and a running
  spooler goes on sending later messages.
* A server that echoes the password (or the AUTH PLAIN string) in its 535 reply gets it
  redacted everywhere: the store file, the status table, ``mapispool flush`` output and logs.
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mapispool import Profile, Session
from mapispool.mapi import FLUSH_FORCE, FLUSH_UPLOAD, PR_DISPLAY_NAME, PR_STATUS_STRING
from mapispool.store import QueueState
from tests.acceptance.test_cli_daemon import Daemon
from tests.acceptance.test_cli_support import message as cli_message
from tests.acceptance.test_cli_support import run
from tests.acceptance.test_cli_support import smtp_profile as cli_profile
from tests.conftest import StoreBackend
from tests.servers.hostile_smtp import HostileSmtpFactory, hostile_smtp_factory
from tests.sync_store import SyncStore

__all__ = ["hostile_smtp_factory"]

LATIN1_REFUSAL = "Empfänger unbekannt, Grüße".encode("latin-1")
PASSWORD = "s3cret-Pässword!42"
USER = "alice@example.test"
MESSAGE = b"From: a@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
NO_PIPELINING = (b"8BITMIME", b"SIZE 10000000")


def smtp_profile(
    tmp_path: Path,
    port: int,
    *,
    send_immediately: bool = False,
    backend: StoreBackend | None = None,
    **settings: object,
) -> Profile:
    """One smtp transport on the fake server (more ``settings`` for its section); the
    store on ``backend``, else a SQLite file in ``tmp_path``."""
    transport = {"provider": "smtp", "host": "127.0.0.1", "port": port, "tls": "none",
                 "timeout": 10, "connect_timeout": 10, **settings}  # fmt: skip
    return Profile.from_dict({
        **(backend.options() if backend else {"store": str(tmp_path / "store.db")}),
        "send_immediately": send_immediately,
        "transports": {"out": transport},
    })  # fmt: skip


def ndr_text(session: Session) -> str:
    """The human-readable text of the single report in the Inbox."""
    (report,) = session.folder("Inbox").messages()
    parsed = email.message_from_bytes(report.content, policy=email.policy.default)
    parts = [
        part.get_content()
        for part in parsed.walk()
        if part.get_content_maintype() == "text" and not part.is_multipart()
    ]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("extensions", [None, NO_PIPELINING], ids=["pipelined", "lock-step"])
def test_latin1_550_to_rcpt_fails_with_an_ndr_not_sent(
    tmp_path: Path,
    store_backend: StoreBackend,
    hostile_smtp_factory: HostileSmtpFactory,
    extensions: object,
) -> None:
    """``550`` in Latin-1 to RCPT: the message fails, an NDR in the Inbox quotes the
    reply decoded as Latin-1, and nothing lands in Sent Items."""
    options = {} if extensions is None else {"extensions": extensions}
    server = hostile_smtp_factory(replies={"RCPT": b"550 5.1.1 " + LATIN1_REFUSAL}, **options)
    with Session.logon(smtp_profile(tmp_path, server.port, backend=store_backend)) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        entry = session.queue_entry(entry_id)
        assert entry.state is QueueState.FAILED, entry.last_error
        assert session.folder("Sent Items").count() == 0
        assert "550 5.1.1 Empfänger unbekannt, Grüße" in ndr_text(session)
        ((_row, outcome, text, ndr_sent),) = session.call(
            lambda s: s.store.recipient_outcomes(entry_id)
        )
        assert (outcome, ndr_sent) == ("failed", True)
        assert "Empfänger" in (text or "")
    assert server.messages == []


@pytest.mark.parametrize("step", ["DATA", "."])
def test_latin1_551_to_data_fails_with_an_ndr(
    tmp_path: Path, store_backend: StoreBackend, hostile_smtp_factory: HostileSmtpFactory, step: str
) -> None:
    """The same bytes in a 551 to DATA (or to the end of data): an NDR, not Sent Items."""
    server = hostile_smtp_factory(replies={step: b"551 5.1.1 " + LATIN1_REFUSAL})
    with Session.logon(smtp_profile(tmp_path, server.port, backend=store_backend)) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.FAILED
        assert session.folder("Sent Items").count() == 0
        assert "551 5.1.1 Empfänger unbekannt" in ndr_text(session)


def test_undecodable_bytes_and_controls_are_replaced(
    tmp_path: Path, store_backend: StoreBackend, hostile_smtp_factory: HostileSmtpFactory
) -> None:
    """Bytes that are neither UTF-8 nor printable Windows-1252 (an undefined byte, NUL,
    ESC): the report keeps the readable part and shows U+FFFD for the rest, so a
    server's reply never reaches a terminal as control characters."""
    server = hostile_smtp_factory(replies={"RCPT": b"550 5.1.1 no\x00such\x1b[2J\x81user"})
    with Session.logon(smtp_profile(tmp_path, server.port, backend=store_backend)) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.FAILED
        ((_row, _outcome, text, _sent),) = session.call(
            lambda s: s.store.recipient_outcomes(entry_id)
        )
        assert text is not None
        assert "no\ufffdsuch\ufffd[2J\ufffduser" in text


def wait_for_state(session: Session, entry_id: bytes, *states: QueueState) -> QueueState:
    """Poll until the entry reaches one of ``states`` (a generous deadline, not a timing
    assertion: a loaded machine only makes it slower)."""
    deadline = time.monotonic() + 60
    while True:
        state = session.queue_entry(entry_id).state
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_latin1_451_to_mail_retries_and_the_spooler_keeps_sending(
    tmp_path: Path, store_backend: StoreBackend, hostile_smtp_factory: HostileSmtpFactory
) -> None:
    """A Latin-1 ``451`` to MAIL: the message waits in retry (not in flight) with the
    reply in its last error, and a running spooler still sends the next message."""
    server = hostile_smtp_factory(replies={"MAIL": [b"451 4.3.0 " + LATIN1_REFUSAL]})
    with Session.logon(
        smtp_profile(tmp_path, server.port, send_immediately=True, backend=store_backend)
    ) as session:
        first = session.submit(MESSAGE)
        state = wait_for_state(session, first, QueueState.RETRY, QueueState.FAILED)
        assert state is QueueState.RETRY
        assert "451 4.3.0 Empfänger unbekannt" in (session.queue_entry(first).last_error or "")
        second = session.submit(MESSAGE.replace(b"hello", b"second"))
        assert wait_for_state(session, second, QueueState.SENT) is QueueState.SENT
    assert any(b"second" in m for m in server.messages)


def test_latin1_451_to_mail_under_the_daemon_keeps_it_sending(
    tmp_path: Path, hostile_smtp_factory: HostileSmtpFactory
) -> None:
    """The reported case: ``mapispool serve`` gets the Latin-1 451 to MAIL for one
    message; that message waits in retry and the next one submitted is still sent."""
    server = hostile_smtp_factory(replies={"MAIL": [b"451 4.3.0 " + LATIN1_REFUSAL]})
    profile = cli_profile(tmp_path, server.port, send_immediately=True)
    daemon = Daemon(profile)
    try:
        first = run(profile, "submit", "-", stdin=cli_message("first"))
        assert first.returncode == 0, first.stderr
        states = wait_for_daemon(tmp_path, lambda s: s.get("first") == QueueState.RETRY)
        assert states["first"] is QueueState.RETRY, states
        second = run(profile, "submit", "-", stdin=cli_message("second"))
        assert second.returncode == 0, second.stderr
        states = wait_for_daemon(tmp_path, lambda s: s.get("second") == QueueState.SENT)
        assert states == {"first": QueueState.RETRY, "second": QueueState.SENT}
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log.read_text(errors="replace")
    assert len(server.messages) == 1


def wait_for_daemon(
    tmp_path: Path, done: Callable[[dict[str, QueueState]], bool]
) -> dict[str, QueueState]:
    """The queue's states by subject, read from the store beside a running daemon, once
    ``done`` says so or after a generous deadline."""
    deadline = time.monotonic() + 60
    store = SyncStore(tmp_path / "store.db")
    try:
        while True:
            entries = store.outgoing_queue(include_finished=True)
            states = {entry.subject: entry.state for entry in entries}
            if done(states) or time.monotonic() > deadline:
                return states
            time.sleep(0.05)
    finally:
        store.close()


# -- item 9: a password echoed in a reply ----------------------------------------------


def secret_forms() -> list[bytes]:
    """The password as it could appear anywhere: raw, UTF-8 in JSON escapes, base64 of
    itself and of the AUTH PLAIN string."""
    plain = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
    escaped = PASSWORD.encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00")
    return [
        PASSWORD.encode(),
        PASSWORD.encode("latin-1"),
        escaped,
        base64.b64encode(PASSWORD.encode()),
        plain,
        b"s3cret-P",  # the ASCII head alone, in case the rest was mangled
    ]


def store_bytes(tmp_path: Path) -> bytes:
    """Every byte of the store: the database file, its WAL and shared memory."""
    data = b""
    for suffix in ("", "-wal", "-shm"):
        path = tmp_path / f"store.db{suffix}"
        if path.exists():
            data += path.read_bytes()
    return data


@pytest.mark.sqlite_only("reads every byte of the SQLite file")
@pytest.mark.parametrize("mechanism", ["plain", "login"])
def test_password_echoed_in_535_is_redacted_everywhere(
    tmp_path: Path,
    hostile_smtp_factory: HostileSmtpFactory,
    monkeypatch: pytest.MonkeyPatch,
    mechanism: str,
) -> None:
    """``535 5.7.8 bad password <password> <base64 of the AUTH PLAIN string>``: the
    failure is reported (the status row says authentication failed), but neither the
    store file, the status table, ``mapispool flush`` output nor its logs hold the
    password in any form."""
    plain = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
    echo = b"535-5.7.8 bad password " + PASSWORD.encode() + b" " + plain
    echo += b"\r\n535 5.7.8 or was it " + base64.b64encode(PASSWORD.encode())
    server = hostile_smtp_factory(auth=True, replies={"AUTH": echo})
    profile_path = tmp_path / "profile.toml"
    profile_path.write_text(
        f'store = "{tmp_path / "store.db"}"\n'
        "send_immediately = false\n"
        "[transports.out]\n"
        'provider = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {server.port}\ntls = "none"\nallow_plaintext_auth = true\n'
        f'username = "{USER}"\npassword_env = "HOSTILE_SMTP_PASSWORD"\nauth = "{mechanism}"\n'
        "timeout = 10\nconnect_timeout = 10\n",
        encoding="utf-8",
    )
    env = {**os.environ, "HOSTILE_SMTP_PASSWORD": PASSWORD, "PYTHONIOENCODING": "utf-8"}
    cli = [sys.executable, "-m", "mapispool.cli", "-v", "--profile", str(profile_path)]
    subprocess.run([*cli, "submit", "-"], input=MESSAGE, env=env, check=True,
                   capture_output=True)  # fmt: skip
    flush = subprocess.run([*cli, "flush", "--no-ui"], env=env, capture_output=True)
    status = subprocess.run([*cli, "status"], env=env, capture_output=True)
    queue = subprocess.run([*cli, "queue", "list"], env=env, capture_output=True)
    assert server.auth_lines, "the client never tried AUTH"
    output = flush.stdout + flush.stderr + status.stdout + status.stderr
    output += queue.stdout + queue.stderr
    assert b"535" in output, output.decode(errors="replace")
    assert b"***" in output
    assert b"or was it ***" in output
    monkeypatch.setenv("HOSTILE_SMTP_PASSWORD", PASSWORD)  # for the session in this process
    with Session.logon(Profile.load(profile_path)) as session:
        session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
        row = next(r for r in session.status_table() if r[PR_DISPLAY_NAME] == "out")
        status_text = str(row[PR_STATUS_STRING])
    assert "535 5.7.8 bad password *** *** / 5.7.8 or was it ***" in status_text
    everything = output + store_bytes(tmp_path) + status_text.encode()
    for form in secret_forms():
        assert form not in everything, form


@pytest.mark.parametrize(
    "replies",
    [
        {"AUTH": b"bad password " + PASSWORD.encode()},  # not even a reply code
        {"MAIL": b"550 5.7.1 not with password " + PASSWORD.encode()},  # after AUTH
        {"RCPT": b"550 5.1.1 " + base64.b64encode(PASSWORD.encode())},
    ],
    ids=["malformed-auth-reply", "mail-after-auth", "rcpt-base64"],
)
def test_password_echoed_in_any_reply_is_redacted(
    tmp_path: Path,
    hostile_smtp_factory: HostileSmtpFactory,
    monkeypatch: pytest.MonkeyPatch,
    replies: dict[str, bytes],
) -> None:
    """Echoes outside a well-formed 535: a line without a code, a refusal of MAIL or RCPT
    after a successful AUTH. The message is retried or bounced; no form of the password
    reaches the store (NDR and status row included)."""
    monkeypatch.setenv("HOSTILE_SMTP_PASSWORD", PASSWORD)
    server = hostile_smtp_factory(auth=True, replies=replies)
    profile = smtp_profile(tmp_path, server.port, username=USER, allow_plaintext_auth=True,
                           password_env="HOSTILE_SMTP_PASSWORD")  # fmt: skip
    with Session.logon(profile) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        state = session.queue_entry(entry_id).state
        row = next(r for r in session.status_table() if r[PR_DISPLAY_NAME] == "out")
        status_text = str(row[PR_STATUS_STRING])
        reports = b"".join(m.content for m in session.folder("Inbox").messages())
    assert state in (QueueState.RETRY, QueueState.FAILED)
    assert server.auth_lines
    everything = store_bytes(tmp_path) + status_text.encode() + reports
    assert b"***" in everything
    for form in secret_forms():
        assert form not in everything, form
