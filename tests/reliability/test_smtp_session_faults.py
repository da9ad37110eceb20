"""SMTP faults at the session level, each against a real server: the faulty message ends
in the right queue state with the reason in its entry and the transport's status row,
and the other transport's mail still goes out in the same Send/Receive."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapispool import Profile, Session
from mapispool.mapi import FLUSH_UPLOAD, PR_DISPLAY_NAME, PR_STATUS_STRING
from mapispool.store import QueueState
from tests.conftest import StoreBackend
from tests.servers.smtp_sink import SmtpSinkFactory


def profile(backend: StoreBackend, port: int) -> Profile:
    """An smtp transport for SMTP recipients and a maildir transport for MAILDIR ones."""
    return Profile.from_dict({
        **backend.options(),
        "send_immediately": False,
        "transports": {
            "out": {"provider": "smtp", "host": "127.0.0.1", "port": port, "tls": "none",
                    "timeout": 5, "connect_timeout": 5},
            "local": {"provider": "maildir"},
        },
    })  # fmt: skip


def submit_pair(session: Session, maildir: Path, body: bytes = b"hello\r\n") -> tuple[bytes, bytes]:
    """One message for the SMTP server and one for a local Maildir."""
    smtp = session.submit(
        b"From: a@example.test\r\nTo: bob@example.test\r\nSubject: smtp\r\n\r\n" + body
    )
    local = session.submit(
        b"From: a@example.test\r\nSubject: local\r\n\r\nhi\r\n",
        recipients=[f"MAILDIR:{maildir}"],
    )
    return smtp, local


def status_string(session: Session, name: str) -> str:
    row = next(r for r in session.status_table() if r[PR_DISPLAY_NAME] == name)
    return str(row[PR_STATUS_STRING])


def make_maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True)
    return path


def test_421_at_connect_retries_and_blocks_nothing(
    tmp_path: Path, store_backend: StoreBackend, smtp_sink_factory: SmtpSinkFactory
) -> None:
    """A server that answers 421 at connect: the message waits for a retry with the
    reply in its last error and the status row; the Maildir message is delivered."""
    sink = smtp_sink_factory(reply_421=["CONNECT"])
    maildir = make_maildir(tmp_path / "md")
    with Session.logon(profile(store_backend, sink.port)) as session:
        smtp, local = submit_pair(session, maildir)
        result = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        entry = session.queue_entry(smtp)
        assert entry.state is QueueState.RETRY
        assert "421" in (entry.last_error or "")
        assert "421" in status_string(session, "out")
        assert session.queue_entry(local).state is QueueState.SENT
        assert result.transports["local"].sent == 1
    assert len(list((maildir / "new").iterdir())) == 1


def test_421_mid_session_retries(
    tmp_path: Path, store_backend: StoreBackend, smtp_sink_factory: SmtpSinkFactory
) -> None:
    """421 in answer to MAIL FROM, after a good greeting and EHLO: retried later."""
    sink = smtp_sink_factory(reply_421=["MAIL"])
    maildir = make_maildir(tmp_path / "md")
    with Session.logon(profile(store_backend, sink.port)) as session:
        smtp, local = submit_pair(session, maildir)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(smtp).state is QueueState.RETRY
        assert session.queue_entry(local).state is QueueState.SENT


@pytest.fixture
def drops_during_data() -> Iterator[int]:
    """A server on 127.0.0.1 that accepts the envelope, answers DATA with 354, reads the
    first 64 KiB of the content and then closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"220 dropper ESMTP\r\n")
            stream = conn.makefile("rb")
            while line := stream.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-dropper\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    stream.read(64 * 1024)
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_connection_dropped_during_data_is_retried_not_uncertain(
    tmp_path: Path, store_backend: StoreBackend, drops_during_data: int
) -> None:
    """The server hangs up while the content is still being sent (before the final dot):
    nothing was handed over, so the message is simply retried, never marked uncertain."""
    maildir = make_maildir(tmp_path / "md")
    big = b"x" * 76 + b"\r\n"
    with Session.logon(profile(store_backend, drops_during_data)) as session:
        smtp, local = submit_pair(session, maildir, body=big * 30_000)  # about 2.3 MB
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        entry = session.queue_entry(smtp)
        assert entry.state is QueueState.RETRY, entry.last_error
        assert session.queue_entry(local).state is QueueState.SENT
