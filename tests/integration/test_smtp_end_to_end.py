"""The smtp transport through the public API: Session.submit, FlushQueues(FLUSH_UPLOAD),
Sent Items, NDRs in the Inbox and the outgoing queue, against aiosmtpd and smtp-sink."""

from __future__ import annotations

import email
import email.policy
import subprocess
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.servers._util import HOST, free_port, need, stop_process, wait_for_ports

session_module = pytest.importorskip(
    "mapispool.session", reason="waits for mapispool.session (the lead's Session)"
)
from mapispool.mapi import FLUSH_UPLOAD  # noqa: E402
from mapispool.profile import Profile  # noqa: E402
from tests.conftest import StoreBackend  # noqa: E402

Session = session_module.Session


def _profile(backend: StoreBackend, port: int) -> Profile:
    return Profile.from_dict(
        {
            **backend.options(),
            "send_immediately": False,
            "transports": {"out": {"provider": "smtp", "host": HOST, "port": port, "tls": "none"}},
        }
    )


def _message(subject: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@x.test"
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name] = value
    msg.set_content("hello\n")
    return msg


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_three_messages_arrive_exactly(store_backend: StoreBackend, smtp_server: Any) -> None:
    """To/Cc/Bcc, a 5 MB attachment and non-ASCII headers: aiosmtpd receives the Sent
    Items bytes with the Bcc recipient in the envelope and no Bcc header anywhere."""
    first = _message("one", To="bob@x.test", Cc="carol@x.test", Bcc="dave@x.test")
    big = _message("two", To="bob@x.test")
    big.add_attachment(
        bytes(range(256)) * (5 * 4096),
        maintype="application",
        subtype="octet-stream",
        filename="blob.bin",
    )
    accents = _message("Grüße aus Köln — ünïcödé", To="Jörg Müller <joerg@x.test>")
    with Session.logon(_profile(store_backend, smtp_server.port)) as session:
        for msg in (first, big, accents):
            session.submit(msg)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        sent = session.folder("Sent Items").messages()
        queue = session.outgoing_queue()
    txns = smtp_server.wait_for(3)
    assert [t.rcpt_tos for t in txns] == [
        ("bob@x.test", "carol@x.test", "dave@x.test"),
        ("bob@x.test",),
        ("joerg@x.test",),
    ]
    assert all(t.mail_from == "alice@x.test" for t in txns)
    assert len(txns[1].data) > 5_000_000
    assert len(sent) == 3
    assert queue == []
    by_subject = {
        str(email.message_from_bytes(t.data, policy=email.policy.default)["Subject"]): t
        for t in txns
    }
    for stored in sent:
        parsed = email.message_from_bytes(stored.content, policy=email.policy.default)
        txn = by_subject[str(parsed["Subject"])]
        assert txn.data == _crlf(stored.content)
        assert b"\nbcc:" not in txn.data.lower()
    assert "Grüße aus Köln — ünïcödé" in by_subject
    assert "dave@x.test" not in txns[0].data.decode()


def test_mixed_recipients_ndr_retry_and_delivery(
    store_backend: StoreBackend, smtp_server_factory: Any
) -> None:
    """One 5xx, one 4xx and one accepted recipient: one NDR in the Inbox, the message
    waits to retry the 4xx one, the accepted one is delivered."""
    server = smtp_server_factory(
        rcpt_answers={"gone@x.test": "550 5.1.1 no such user", "later@x.test": "450 4.2.0 busy"}
    )
    msg = _message("mixed", To="ok@x.test, gone@x.test, later@x.test")
    with Session.logon(_profile(store_backend, server.port)) as session:
        entry_id = session.submit(msg)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        inbox = session.folder("Inbox").messages()
        queue = session.outgoing_queue()
    (txn,) = server.wait_for(1)
    assert txn.rcpt_tos == ("ok@x.test",)
    ndrs = [m for m in inbox if m.message_class == "Report.IPM.Note.NDR"]
    assert len(ndrs) == 1
    assert b"550 5.1.1 no such user" in ndrs[0].content
    assert b"gone@x.test" in ndrs[0].content
    (entry,) = queue
    assert entry.entry_id == entry_id
    assert entry.state.value == "retry"


@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., int]]:
    """Postfix smtp-sink with fault options; returns its port."""
    binary = need("smtp-sink")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> int:
        port = free_port()
        procs.append(
            subprocess.Popen(
                [binary, "-u", "nobody", *options, f"{HOST}:{port}", "16"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_ports([port])
        return port

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.mark.parametrize("fault", [("-Q", "RCPT"), ("-q", "DATA")], ids=["421", "drop"])
def test_failure_before_data_is_retried(
    store_backend: StoreBackend, smtp_sink: Callable[..., int], fault: tuple[str, str]
) -> None:
    """A 421 or a dropped connection before DATA leaves the message waiting to retry."""
    port = smtp_sink(*fault)
    with Session.logon(_profile(store_backend, port)) as session:
        session.submit(_message("x", To="bob@x.test"))
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        (entry,) = session.outgoing_queue()
        sent = session.folder("Sent Items").messages()
    assert entry.state.value == "retry"
    assert entry.last_error
    assert sent == []


def test_drop_after_the_final_dot_is_uncertain(
    store_backend: StoreBackend, smtp_sink: Callable[..., int]
) -> None:
    """A connection lost after the final dot leaves the message uncertain, not resent."""
    port = smtp_sink("-q", ".")
    with Session.logon(_profile(store_backend, port)) as session:
        session.submit(_message("x", To="bob@x.test"))
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        (entry,) = session.outgoing_queue()
    assert entry.state.value == "uncertain"
