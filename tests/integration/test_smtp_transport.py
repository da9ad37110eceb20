"""The smtp transport's logon against real servers on 127.0.0.1: aiosmtpd (recording,
TLS, AUTH), Postfix smtp-sink (421 and dropped connections) and a tiny scripted SMTP
server for exchanges neither can produce (XOAUTH2, a hang after the final dot).

Until the spooler engine drives transports end to end, these tests drive ``SmtpLogon``
through a small ``Support`` of our own; the servers are always real."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from mapispool.mapi import (
    END_RESEND_LATER,
    MAPI_BCC,
    MAPI_CC,
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_WAIT,
    NOTIFY_END_OUTBOUND_FLUSH,
    PR_NDR_DIAG_CODE,
    PR_REPORT_TEXT,
    PR_SENDER_EMAIL_ADDRESS,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_OFFLINE,
    MapiError,
)
from mapispool.spi import OutboundMessage, Recipient, Support
from mapispool.transports.smtp import SmtpLogon, SmtpProvider
from tests.servers._util import HOST, free_port, need, stop_process, wait_for_ports
from tests.servers.smtp import SmtpServer

SENDER = "alice@x.test"
PASSWORD = "pw-Secret-42"


class RecordingSupport(Support):
    """The spooler's side of the SPI, reduced to recording what the transport reports."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = dict(settings)
        self.row: dict[int, object] = {}
        self.reported: list[tuple[OutboundMessage, list[Recipient]]] = []

    @property
    def name(self) -> str:
        return "out"

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._settings

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger("mapispool.test.smtp")

    def modify_status_row(self, props: Mapping[int, object], flags: int = 0) -> None:
        if not flags:
            self.row.clear()
        self.row.update(props)

    def status_row(self) -> Mapping[int, object]:
        return dict(self.row)

    def spooler_notify(self, flags: int, data: object | None = None) -> None:
        pass

    def status_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        self.reported.append((message, list(recipients)))

    def has_dedupe_key(self, key: str) -> bool:
        return False

    def get_state(self, key: str) -> Any:
        return None

    def set_state(self, key: str, value: Any) -> None:
        pass

    @property
    def status_code(self) -> int:
        value = self.row.get(PR_STATUS_CODE, 0)
        assert isinstance(value, int)
        return value

    @property
    def status_string(self) -> str:
        return str(self.row.get(PR_STATUS_STRING, ""))


def make_message(
    recipients: Sequence[Recipient | str],
    content: bytes = b"From: alice@x.test\r\nTo: bob@x.test\r\nSubject: hi\r\n\r\nhello\r\n",
    *,
    sender: str = SENDER,
    entry_id: bytes = b"\x01\x02",
) -> OutboundMessage:
    """An OutboundMessage as the spooler hands it over, recording handoff calls."""
    rows = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
    handoffs: list[bool] = []
    message = OutboundMessage(
        entry_id,
        {PR_SENDER_EMAIL_ADDRESS: sender},
        rows,
        size=len(content),
        open_content=lambda: __import__("io").BytesIO(content),
        on_handoff=handoffs.append,
    )
    message.reference = handoffs
    return message


async def logon(settings: Mapping[str, Any]) -> tuple[SmtpLogon, RecordingSupport]:
    support = RecordingSupport(settings)
    SmtpProvider.check_settings(settings)
    logon = await SmtpProvider("out", settings).transport_logon(support, 0)
    assert isinstance(logon, SmtpLogon)
    return logon, support


def plain(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    return {"host": HOST, "port": server.port, "tls": "none", **extra}


# -- aiosmtpd: the happy path, envelopes and per-recipient outcomes --------------------


async def test_envelope_comes_from_mapi_properties(smtp_server: SmtpServer) -> None:
    """MAIL FROM is PR_SENDER_EMAIL_ADDRESS and RCPT TO every pending SMTP recipient (To,
    Cc and Bcc alike); the bytes arrive unchanged, with CRLF, and without a Bcc header."""
    xp, _support = await logon(plain(smtp_server))
    content = (
        b"From: alice@x.test\nTo: bob@x.test\nCc: carol@x.test\nBcc: dave@x.test\n"
        b"Subject: s\n\n.leading dot\nbody\n"
    )
    message = make_message(
        [
            Recipient("bob@x.test"),
            Recipient("carol@x.test", recipient_type=MAPI_CC),
            Recipient("dave@x.test", recipient_type=MAPI_BCC),
            Recipient("+331234", addrtype="FAX"),
        ],
        content,
    )
    await xp.submit_message(message, 0)
    assert await xp.end_message(message) == 0
    (txn,) = await smtp_server.wait_for_async(1)
    assert txn.mail_from == SENDER
    assert txn.rcpt_tos == ("bob@x.test", "carol@x.test", "dave@x.test")
    assert txn.data == (
        b"From: alice@x.test\r\nTo: bob@x.test\r\nCc: carol@x.test\r\n"
        b"Subject: s\r\n\r\n.leading dot\r\nbody\r\n"
    )
    assert [r.responsibility for r in message.recipients] == [True, True, True, False]
    assert message.reference == [True, False]  # handoff begun, then ended by the reply
    await xp.logoff(0)


async def test_null_sender(smtp_server: SmtpServer) -> None:
    """An empty PR_SENDER_EMAIL_ADDRESS is the null reverse-path <>."""
    xp, _ = await logon(plain(smtp_server))
    await xp.submit_message(make_message(["bob@x.test"], sender=""), 0)
    (txn,) = await smtp_server.wait_for_async(1)
    assert txn.mail_from in ("", "<>")  # aiosmtpd records the null path as written
    await xp.logoff(0)


async def test_one_connection_for_consecutive_messages(smtp_server: SmtpServer) -> None:
    """Consecutive messages reuse one connection until the end of the flush closes it."""
    xp, support = await logon(plain(smtp_server))
    for i in range(3):
        await xp.submit_message(make_message(["bob@x.test"], entry_id=bytes([i])), 0)
    txns = await smtp_server.wait_for_async(3)
    assert len({t.peer for t in txns}) == 1
    await xp.transport_notify(NOTIFY_END_OUTBOUND_FLUSH)
    assert "Disconnected" in support.status_string
    await xp.submit_message(make_message(["bob@x.test"], entry_id=b"\x09"), 0)
    txns = await smtp_server.wait_for_async(4)
    assert txns[3].peer != txns[0].peer
    await xp.logoff(0)


async def test_mixed_recipient_outcomes(smtp_server_factory: Any) -> None:
    """One accepted, one 5xx, one 4xx: the 5xx is reported once with its reply text and
    code, the 4xx stays pending and end_message asks to resend later."""
    server = smtp_server_factory(
        rcpt_answers={"gone@x.test": "550 5.1.1 no such user", "later@x.test": "450 4.2.0 busy"}
    )
    xp, support = await logon(plain(server))
    message = make_message(["ok@x.test", "gone@x.test", "later@x.test"])
    await xp.submit_message(message, 0)
    assert await xp.end_message(message) == END_RESEND_LATER
    (txn,) = await server.wait_for_async(1)
    assert txn.rcpt_tos == ("ok@x.test",)
    ok, gone, later = message.recipients
    assert (ok.responsibility, gone.responsibility, later.responsibility) == (True, True, False)
    assert len(support.reported) == 1
    assert support.reported[0][1] == [gone]
    assert gone.props[PR_REPORT_TEXT] == "550 5.1.1 no such user"
    assert gone.props[PR_NDR_DIAG_CODE] == 550
    await xp.logoff(0)


async def test_every_recipient_refused_sends_no_data(smtp_server_factory: Any) -> None:
    """When no recipient is accepted, DATA is never sent."""
    server = smtp_server_factory(rcpt_answers={"gone@x.test": "550 5.1.1 no"})
    xp, _support = await logon(plain(server))
    message = make_message(["gone@x.test"])
    await xp.submit_message(message, 0)
    assert await xp.end_message(message) == 0
    assert server.transactions == []
    assert not message.handoff_begun
    assert message.recipients[0].responsibility
    await xp.logoff(0)


async def test_permanent_failure_after_data_fails_everyone(smtp_server_factory: Any) -> None:
    """A 5xx to the content fails every pending recipient through one status_recips."""
    server = smtp_server_factory(data_answer="554 5.7.1 looks like spam")
    xp, support = await logon(plain(server))
    message = make_message(["a@x.test", "b@x.test"])
    await xp.submit_message(message, 0)
    assert await xp.end_message(message) == 0
    (reported,) = support.reported
    assert [r.props[PR_REPORT_TEXT] for r in reported[1]] == ["554 5.7.1 looks like spam"] * 2
    await xp.logoff(0)


async def test_temporary_failure_after_data_retries_the_message(
    smtp_server_factory: Any,
) -> None:
    """A 4xx after the end of data raises MAPI_E_WAIT with the reply; nobody is touched."""
    server = smtp_server_factory(data_answer="451 4.3.0 disk full")
    xp, support = await logon(plain(server))
    message = make_message(["a@x.test"])
    with pytest.raises(MapiError) as info:
        await xp.submit_message(message, 0)
    assert info.value.hresult == MAPI_E_WAIT
    assert info.value.reply == "451 4.3.0 disk full"
    assert not message.recipients[0].responsibility
    assert not message.handoff_uncertain
    assert "Last error: 451 4.3.0 disk full" in support.status_string
    await xp.logoff(0)


async def test_temporary_mail_from_failure(smtp_server_factory: Any) -> None:
    """A 4xx to MAIL FROM retries the whole message later."""
    server = smtp_server_factory(mail_answer="452 4.3.1 out of memory")
    xp, _ = await logon(plain(server))
    with pytest.raises(MapiError) as info:
        await xp.submit_message(make_message(["a@x.test"]), 0)
    assert info.value.hresult == MAPI_E_WAIT
    await xp.logoff(0)


# -- TLS and AUTH ----------------------------------------------------------------------


async def test_starttls_and_plain_auth_with_password_env(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submission with STARTTLS verified against ca_file, then AUTH with the password
    from an environment variable; validate_state reports it available."""
    server = smtp_server_factory(tls="starttls", auth=("carol", PASSWORD), auth_required=True)
    monkeypatch.setenv("TEST_SMTP_PW", PASSWORD)
    xp, support = await logon(
        {
            "host": HOST,
            "port": server.port,
            "ca_file": str(server.ca_file),
            "username": "carol",
            "password_env": "TEST_SMTP_PW",
        }
    )
    await xp.validate_state(0)
    assert support.status_code & STATUS_AVAILABLE
    assert "STARTTLS, AUTH PLAIN as carol" in support.status_string
    await xp.submit_message(make_message(["bob@x.test"]), 0)
    (txn,) = await server.wait_for_async(1)
    assert txn.tls
    assert txn.auth_user == "carol"
    await xp.logoff(0)


async def test_implicit_tls(smtp_server_factory: Any) -> None:
    """tls = "implicit" speaks TLS from the first byte."""
    server = smtp_server_factory(tls="implicit")
    xp, _ = await logon(
        {"host": HOST, "port": server.port, "tls": "implicit", "ca_file": str(server.ca_file)}
    )
    await xp.submit_message(make_message(["bob@x.test"]), 0)
    (txn,) = await server.wait_for_async(1)
    assert txn.tls
    await xp.logoff(0)


async def test_untrusted_certificate_names_the_settings(smtp_server_factory: Any) -> None:
    """A certificate that does not verify gives MAPI_E_NETWORK_ERROR naming ca_file and
    verify, and STATUS_FAILURE on the row."""
    server = smtp_server_factory(tls="starttls")
    xp, support = await logon({"host": HOST, "port": server.port})
    with pytest.raises(MapiError) as info:
        await xp.submit_message(make_message(["bob@x.test"]), 0)
    assert info.value.hresult == MAPI_E_NETWORK_ERROR
    assert "did not verify" in str(info.value)
    assert "ca_file" in str(info.value)
    assert "verify = false" in str(info.value)
    assert support.status_code & STATUS_FAILURE
    assert not support.status_code & STATUS_AVAILABLE
    await xp.logoff(0)


async def test_verify_false_is_explicit_and_warned(
    smtp_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """verify = false skips the check and says so in the log."""
    server = smtp_server_factory(tls="starttls")
    with caplog.at_level(logging.WARNING):
        xp, _ = await logon({"host": HOST, "port": server.port, "verify": False})
    assert "verify = false" in caplog.text
    await xp.submit_message(make_message(["bob@x.test"]), 0)
    await server.wait_for_async(1)
    await xp.logoff(0)


async def test_auth_failure_is_logon_failed_and_never_shows_the_password(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 535 raises MAPI_E_LOGON_FAILED, sets STATUS_FAILURE with the reply, and the
    password appears nowhere: not in the error, the status row or the log."""
    server = smtp_server_factory(tls="starttls", auth=("carol", PASSWORD), auth_required=True)
    monkeypatch.setenv("TEST_SMTP_PW", "wrong-" + PASSWORD)
    xp, support = await logon(
        {
            "host": HOST,
            "port": server.port,
            "ca_file": str(server.ca_file),
            "username": "carol",
            "password_env": "TEST_SMTP_PW",
        }
    )
    message = make_message(["bob@x.test"])
    with caplog.at_level(logging.DEBUG), pytest.raises(MapiError) as info:
        await xp.submit_message(message, 0)
    assert info.value.hresult == MAPI_E_LOGON_FAILED
    assert info.value.reply is not None
    assert info.value.reply.startswith("535")
    assert support.status_code & STATUS_FAILURE
    assert "535" in support.status_string
    for text in (str(info.value), repr(info.value), support.status_string, caplog.text):
        assert PASSWORD not in text
    assert not message.recipients[0].responsibility
    await xp.logoff(0)


# -- unreachable servers and timeouts -----------------------------------------------------


async def test_connection_refused_is_a_network_error() -> None:
    """Nobody listening: MAPI_E_NETWORK_ERROR and STATUS_OFFLINE, from validate_state too."""
    port = free_port()
    xp, support = await logon({"host": HOST, "port": port, "tls": "none"})
    await xp.validate_state(0)
    assert support.status_code & STATUS_OFFLINE
    with pytest.raises(MapiError) as info:
        await xp.submit_message(make_message(["bob@x.test"]), 0)
    assert info.value.hresult == MAPI_E_NETWORK_ERROR
    assert f"{HOST}:{port}" in str(info.value)
    await xp.logoff(0)


async def test_silent_server_times_out() -> None:
    """A server that accepts but never greets is given up after connect_timeout."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        xp, _ = await logon({"host": HOST, "port": port, "tls": "none", "connect_timeout": 0.3})
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(MapiError) as info:
            await xp.submit_message(make_message(["bob@x.test"]), 0)
        assert info.value.hresult == MAPI_E_NETWORK_ERROR
        assert loop.time() - start < 3
        await xp.logoff(0)


# -- smtp-sink: 421 and dropped connections ------------------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., int]]:
    """Start Postfix smtp-sink with the given fault options; returns its port."""
    binary = need("smtp-sink")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> int:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "-u", "nobody", *options, f"{HOST}:{port}", "16"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_for_ports([port])
        return port

    yield start
    for proc in procs:
        stop_process(proc)


async def test_421_before_data_is_retried_later(smtp_sink: Callable[..., int]) -> None:
    """smtp-sink answering 421 to RCPT: MAPI_E_WAIT with the reply, nothing handed over."""
    port = smtp_sink("-Q", "RCPT")
    xp, _support = await logon({"host": HOST, "port": port, "tls": "none"})
    message = make_message(["bob@x.test"])
    with pytest.raises(MapiError) as info:
        await xp.submit_message(message, 0)
    assert info.value.hresult == MAPI_E_WAIT
    assert info.value.reply is not None
    assert info.value.reply.startswith("421")
    assert not message.handoff_begun
    assert not message.recipients[0].responsibility
    await xp.logoff(0)


async def test_drop_before_data_is_retried_later(smtp_sink: Callable[..., int]) -> None:
    """A connection dropped at DATA is a plain network error, not an uncertain one."""
    port = smtp_sink("-q", "DATA")
    xp, _ = await logon({"host": HOST, "port": port, "tls": "none"})
    message = make_message(["bob@x.test"])
    with pytest.raises(MapiError) as info:
        await xp.submit_message(message, 0)
    assert info.value.hresult == MAPI_E_NETWORK_ERROR
    assert not message.handoff_begun
    await xp.logoff(0)


async def test_drop_after_the_final_dot_is_uncertain(smtp_sink: Callable[..., int]) -> None:
    """smtp-sink hanging up after the final dot without a reply: MAPI_E_NETWORK_ERROR,
    begin_handoff called and end_handoff not, so the spooler marks it uncertain."""
    port = smtp_sink("-q", ".")
    xp, _support = await logon({"host": HOST, "port": port, "tls": "none"})
    message = make_message(["bob@x.test"])
    with pytest.raises(MapiError) as info:
        await xp.submit_message(message, 0)
    assert info.value.hresult == MAPI_E_NETWORK_ERROR
    assert "uncertain" in str(info.value)
    assert message.handoff_uncertain
    assert message.reference == [True]
    assert not message.recipients[0].responsibility
    await xp.logoff(0)


# -- a scripted server: XOAUTH2 and a hang after the final dot --------------------------


class ScriptedSmtp:
    """A minimal SMTP server on 127.0.0.1 in a thread, for exchanges that aiosmtpd and
    smtp-sink cannot produce. ``after_dot`` is ``"250"`` or ``"hang"``; AUTH lines are
    recorded decoded and answered with ``auth_reply``."""

    def __init__(self, *, after_dot: str = "250", auth_reply: str = "235 2.7.0 ok") -> None:
        self.after_dot = after_dot  # "250", "250+close" or "hang"
        self.auth_reply = auth_reply
        self.auth_lines: list[bytes] = []
        self.sessions = 0
        self._listener = socket.socket()
        self._listener.bind((HOST, 0))
        self._listener.listen()
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.sessions += 1
            with conn:
                self._session(conn.makefile("rwb", buffering=0))

    def _session(self, stream: Any) -> None:
        def say(line: str) -> None:
            stream.write(line.encode() + b"\r\n")

        say("220 scripted ESMTP")
        while not self._stop.is_set():
            line = stream.readline()
            if not line:
                return
            verb = line.split(b" ", 1)[0].upper().strip()
            if verb == b"EHLO":
                say("250-scripted")
                say("250 AUTH XOAUTH2 OAUTHBEARER")
            elif verb == b"AUTH":
                self.auth_lines.append(base64.b64decode(line.split()[2]))
                say(self.auth_reply)
                if self.auth_reply.startswith("334"):
                    stream.readline()
                    say("535 5.7.8 bad token")
            elif verb == b"DATA":
                say("354 go")
                while stream.readline() not in (b".\r\n", b""):
                    pass
                if self.after_dot == "hang":
                    self._stop.wait(10)
                    return
                say("250 2.0.0 queued")
                if self.after_dot == "250+close":
                    return
            elif verb == b"QUIT":
                say("221 bye")
                return
            else:
                say("250 ok")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedSmtp]]:
    servers: list[ScriptedSmtp] = []

    def make(**options: Any) -> ScriptedSmtp:
        servers.append(ScriptedSmtp(**options))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


async def test_xoauth2_token_fetched_at_every_connect(
    scripted: Callable[..., ScriptedSmtp], tmp_path: Any
) -> None:
    """XOAUTH2 with token_command: the command runs again at each (re)connect, so a
    refreshed token is used (peers.md §4.9)."""
    server = scripted()
    counter = tmp_path / "n"
    command = f"echo x >> {counter}; echo tok-$(wc -l < {counter})"
    xp, _ = await logon(
        {
            "host": HOST,
            "port": server.port,
            "tls": "none",
            "allow_plaintext_auth": True,
            "username": "bob@x.test",
            "token_command": command,
        }
    )
    await xp.submit_message(make_message(["a@x.test"]), 0)
    await xp.transport_notify(NOTIFY_END_OUTBOUND_FLUSH)
    await xp.submit_message(make_message(["a@x.test"]), 0)
    assert server.auth_lines == [
        b"user=bob@x.test\x01auth=Bearer tok-1\x01\x01",
        b"user=bob@x.test\x01auth=Bearer tok-2\x01\x01",
    ]
    await xp.logoff(0)


async def test_oauthbearer_failure_reads_the_final_reply(
    scripted: Callable[..., ScriptedSmtp],
) -> None:
    """An OAUTHBEARER error challenge (334) is answered so the 535 arrives and is raised
    as MAPI_E_LOGON_FAILED."""
    server = scripted(auth_reply="334 eyJzdGF0dXMiOiI0MDEifQ==")
    xp, _support = await logon(
        {
            "host": HOST,
            "port": server.port,
            "tls": "none",
            "allow_plaintext_auth": True,
            "username": "bob@x.test",
            "auth": "oauthbearer",
            "token_command": "echo tok",
        }
    )
    with pytest.raises(MapiError) as info:
        await xp.submit_message(make_message(["a@x.test"]), 0)
    assert info.value.hresult == MAPI_E_LOGON_FAILED
    assert info.value.reply == "535 5.7.8 bad token"
    assert server.auth_lines[0].startswith(b"n,a=bob@x.test,\x01host=127.0.0.1\x01")
    await xp.logoff(0)


async def test_no_reply_after_the_final_dot_times_out_uncertain(
    scripted: Callable[..., ScriptedSmtp],
) -> None:
    """A server that swallows the final dot and never answers: after `timeout` the
    message is uncertain, never silently resent."""
    server = scripted(after_dot="hang")
    xp, _ = await logon({"host": HOST, "port": server.port, "tls": "none", "timeout": 0.5})
    message = make_message(["a@x.test"])
    with pytest.raises(MapiError) as info:
        await xp.submit_message(message, 0)
    assert info.value.hresult == MAPI_E_NETWORK_ERROR
    assert message.handoff_uncertain
    await xp.logoff(0)


async def test_reconnects_after_the_server_closed(
    scripted: Callable[..., ScriptedSmtp],
) -> None:
    """A server that hangs up after every message: the next one reconnects by itself."""
    server = scripted(after_dot="250+close")
    xp, _ = await logon({"host": HOST, "port": server.port, "tls": "none"})
    for i in range(3):
        message = make_message(["bob@x.test"], entry_id=bytes([i]))
        await xp.submit_message(message, 0)
        assert message.recipients[0].responsibility
    assert server.sessions == 3
    await xp.logoff(0)


# -- concurrency ---------------------------------------------------------------------------


async def test_connections_setting_opens_a_pool(smtp_server: SmtpServer) -> None:
    """connections = 3 sets max_in_flight to 3 and carries concurrent messages on
    separate connections (aiosmtplib clients are never shared)."""
    xp, _ = await logon(plain(smtp_server, connections=3))
    assert xp.max_in_flight == 3
    messages = [make_message(["bob@x.test"], entry_id=bytes([i])) for i in range(9)]
    await asyncio.gather(*(xp.submit_message(m, 0) for m in messages))
    txns = await smtp_server.wait_for_async(9)
    assert 1 < len({t.peer for t in txns}) <= 3
    assert all(m.recipients[0].responsibility for m in messages)
    await xp.logoff(0)


# -- RFC 2920 pipelining: the same outcomes with and without it ---------------------------


def _advertise_pipelining(server: SmtpServer) -> None:
    """Make aiosmtpd (which handles pipelined commands but does not say so) offer it."""

    async def handle_ehlo(
        _server: Any, session: Any, _envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return [responses[0], "250-PIPELINING", *responses[1:]]

    server.handler.handle_EHLO = handle_ehlo  # type: ignore[attr-defined]


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    from mapispool.transports.smtp.connection import ReplyStream

    writes: list[bytes] = []
    original = ReplyStream.write

    def write(self: ReplyStream, data: bytes) -> None:
        writes.append(data)
        original(self, data)

    monkeypatch.setattr(ReplyStream, "write", write)
    return writes


def _summary(message: OutboundMessage, support: RecordingSupport, answer: int) -> object:
    return (
        answer,
        [r.responsibility for r in message.recipients],
        [(r.address, r.props.get(PR_REPORT_TEXT), r.props.get(PR_NDR_DIAG_CODE))
         for _m, rs in support.reported for r in rs],
        list(message.reference),  # type: ignore[call-overload]
    )  # fmt: skip


@pytest.mark.parametrize("advertised", [True, False], ids=["offered", "not-offered"])
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
async def test_pipelining_keeps_per_recipient_outcomes(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch, advertised: bool, enabled: bool
) -> None:
    """Accepted, 5xx, 4xx and a locally refused address, then an all-refused message and
    a refused sender, on one connection: the outcomes are those of the lock-step exchange
    (kept below as literals), whether or not the server offers PIPELINING and whether or
    not the profile allows it; MAIL, RCPT and DATA share one write only when both do."""
    server = smtp_server_factory(
        rcpt_answers={"gone@x.test": "550 5.1.1 no such user", "later@x.test": "450 4.2.0 busy"}
    )
    if advertised:
        _advertise_pipelining(server)
    writes = _record_writes(monkeypatch)
    xp, support = await logon(plain(server, pipelining=enabled))
    message = make_message(["ok@x.test", "gone@x.test", "later@x.test", "bad address@x"])
    await xp.submit_message(message, 0)
    assert _summary(message, support, await xp.end_message(message)) == (
        END_RESEND_LATER,
        [True, True, False, True],
        [("gone@x.test", "550 5.1.1 no such user", 550),
         ("bad address@x", "553 5.1.3 'bad address@x' is not a valid SMTP address", 553)],
        [True, False],
    )  # fmt: skip
    pipelined = advertised and enabled
    first = writes[0]
    assert first.startswith(b"MAIL FROM:<alice@x.test>")
    assert (b"RCPT TO:<ok@x.test>" in first and first.endswith(b"DATA\r\n")) is pipelined
    assert b"bad address" not in b"".join(writes)
    (txn,) = await server.wait_for_async(1)
    assert txn.rcpt_tos == ("ok@x.test",)

    support.reported.clear()
    refused = make_message(["gone@x.test"], entry_id=b"\x03")
    await xp.submit_message(refused, 0)
    assert _summary(refused, support, await xp.end_message(refused)) == (
        0, [True], [("gone@x.test", "550 5.1.1 no such user", 550)], [],
    )  # fmt: skip

    support.reported.clear()
    unsendable = make_message(["ok@x.test"], sender="bad sender", entry_id=b"\x04")
    await xp.submit_message(unsendable, 0)
    assert _summary(unsendable, support, await xp.end_message(unsendable)) == (
        0, [True], [("ok@x.test", "553 5.1.3 'bad sender' is not a valid SMTP address", 553)],
        [],
    )  # fmt: skip

    after = make_message(["ok@x.test"], entry_id=b"\x05")
    await xp.submit_message(after, 0)
    txns = await server.wait_for_async(2)
    assert len({t.peer for t in txns}) == 1  # every refusal left the connection usable
    await xp.logoff(0)


async def test_pipelining_with_a_refused_sender(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAIL refused while RCPT and DATA are already on the wire: every recipient fails
    with the MAIL reply, the replies to RCPT and DATA are read and dropped, and the next
    message goes out on the same connection."""
    server = smtp_server_factory(mail_answer="550 5.7.1 sender refused")
    _advertise_pipelining(server)
    writes = _record_writes(monkeypatch)
    xp, support = await logon(plain(server))
    message = make_message(["a@x.test", "b@x.test"])
    await xp.submit_message(message, 0)
    assert _summary(message, support, await xp.end_message(message)) == (
        0, [True, True],
        [("a@x.test", "550 5.7.1 sender refused", 550),
         ("b@x.test", "550 5.7.1 sender refused", 550)],
        [],
    )  # fmt: skip
    assert writes[0].endswith(b"DATA\r\n")
    assert server.transactions == []
    await xp.logoff(0)


SINK_FAULTS = [
    ("-f", "RCPT"),
    ("-r", "RCPT"),
    ("-Q", "RCPT"),
    ("-Q", "MAIL"),
    ("-f", "MAIL"),
    ("-r", "DATA"),
    ("-f", "."),
    ("-q", "RCPT"),
    ("-q", "DATA"),
    ("-q", "."),
    ("-Q", "."),
]


@pytest.mark.parametrize(("flag", "command"), SINK_FAULTS, ids=[f"{f}{c}" for f, c in SINK_FAULTS])
async def test_pipelining_against_smtp_sink_faults(
    smtp_sink: Callable[..., int], flag: str, command: str
) -> None:
    """smtp-sink offers PIPELINING; with each of its fault injections the outcome (the
    error or end_message's answer, the recipients, the reports, the hand-over calls) is
    the same with pipelining as without it."""

    async def run(pipelining: bool) -> object:
        port = smtp_sink(flag, command)
        xp, support = await logon({"host": HOST, "port": port, "tls": "none",
                                   "pipelining": pipelining})  # fmt: skip
        message = make_message(["a@x.test", "b@x.test"])
        try:
            await xp.submit_message(message, 0)
        except MapiError as exc:
            result: object = (exc.hresult, exc.reply, "uncertain" in str(exc))
        else:
            result = await xp.end_message(message)
        await xp.logoff(0)
        return result, _summary(message, support, 0)

    assert await run(True) == await run(False)


async def test_smtp_sink_without_pipelining(smtp_sink: Callable[..., int]) -> None:
    """smtp-sink with PIPELINING switched off (-p): messages still go out, lock-step."""
    port = smtp_sink("-p")
    xp, _support = await logon({"host": HOST, "port": port, "tls": "none"})
    for i in range(3):
        message = make_message(["a@x.test", "b@x.test"], entry_id=bytes([i]))
        await xp.submit_message(message, 0)
        assert await xp.end_message(message) == 0
        assert [r.responsibility for r in message.recipients] == [True, True]
    await xp.logoff(0)
