"""The durable hand-over mark overlaps the envelope (issue #11): with PIPELINING the smtp
transport starts the mark (``OutboundMessage.start_handoff``) as soon as MAIL, RCPT and
DATA are written, and writes the final dot only once both the 354 and the durable mark are
in. A transaction that never reaches the dot still waits for its mark, and a mark that
fails keeps the dot from going out. Real aiosmtpd on 127.0.0.1, made to offer PIPELINING."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from mapispool.mapi import PR_SENDER_EMAIL_ADDRESS, MapiError
from mapispool.spi import OutboundMessage, Recipient
from tests.integration.test_smtp_transport import (
    SENDER,
    _advertise_pipelining,
    _record_writes,
    logon,
    plain,
)

CONTENT = b"From: alice@x.test\r\nTo: bob@x.test\r\nSubject: hi\r\n\r\nhello\r\n"


def _message(events: list[str], *, mark_error: Exception | None = None) -> OutboundMessage:
    """A message whose durable mark takes a while (as a busy store's writer would) and
    logs when it starts and ends; ``on_handoff`` calls are logged too."""

    async def start_mark() -> None:
        events.append("mark-start")
        await asyncio.sleep(0.2)
        if mark_error is not None:
            events.append("mark-failed")
            raise mark_error
        events.append("mark-durable")

    return OutboundMessage(
        b"\x01\x02", {PR_SENDER_EMAIL_ADDRESS: SENDER},
        [Recipient("bob@x.test"), Recipient("gone@x.test")], size=len(CONTENT),
        open_content=lambda: io.BytesIO(CONTENT),
        on_handoff=lambda begun: events.append(f"handoff-{begun}"), start_mark=start_mark,
    )  # fmt: skip


def _log_writes(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    from mapispool.transports.smtp.connection import ReplyStream

    original = ReplyStream.write

    def write(self: ReplyStream, data: bytes) -> None:
        if data.endswith(b"DATA\r\n"):
            events.append("write-envelope")
        elif data.endswith(b"\r\n.\r\n"):
            events.append("write-dot")
        original(self, data)

    monkeypatch.setattr(ReplyStream, "write", write)


async def test_mark_is_written_while_the_server_answers_the_envelope(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Envelope first, then the mark starts; the dot goes out only after the mark is
    durable; ``begin_handoff`` does not write the mark a second time (only the end of
    the hand-over reaches ``on_handoff``)."""
    server = smtp_server_factory(rcpt_answers={"gone@x.test": "550 5.1.1 no such user"})
    _advertise_pipelining(server)
    events: list[str] = []
    _log_writes(monkeypatch, events)
    xp, _support = await logon(plain(server))
    message = _message(events)
    try:
        await xp.submit_message(message, 0)
    finally:
        await xp.logoff(0)
    assert events == [
        "write-envelope", "mark-start", "mark-durable", "write-dot", "handoff-False"
    ]  # fmt: skip
    assert [r.responsibility for r in message.recipients] == [True, True]
    assert len(server.messages) == 1
    assert not message.handoff_uncertain


async def test_a_refused_envelope_waits_for_its_mark_and_hands_nothing_over(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every recipient refused: no dot, but ``submit_message`` returns only after the
    mark is durable (it never lands after the outcome), and no hand-over began."""
    server = smtp_server_factory(
        rcpt_answers={"bob@x.test": "550 5.1.1 no", "gone@x.test": "550 5.1.1 no"}
    )
    _advertise_pipelining(server)
    events: list[str] = []
    _log_writes(monkeypatch, events)
    writes = _record_writes(monkeypatch)
    xp, support = await logon(plain(server))
    message = _message(events)
    try:
        await xp.submit_message(message, 0)
        assert events == ["write-envelope", "mark-start", "mark-durable"]
    finally:
        await xp.logoff(0)
    assert not message.handoff_begun
    assert not any(w.endswith(b"\r\n.\r\n") for w in writes)
    assert [r.address for _m, rs in support.reported for r in rs] == ["bob@x.test", "gone@x.test"]


async def test_a_failed_mark_keeps_the_dot_from_going_out(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refused the mark (the claim was taken over): the error reaches the
    spooler, the final dot is never written, the server keeps nothing, and the message
    is not uncertain (nothing was handed over)."""
    server = smtp_server_factory()
    _advertise_pipelining(server)
    events: list[str] = []
    _log_writes(monkeypatch, events)
    xp, _support = await logon(plain(server))
    message = _message(events, mark_error=MapiError(0x80004005, "claim taken over"))
    try:
        with pytest.raises(MapiError, match="claim taken over"):
            await xp.submit_message(message, 0)
    finally:
        await xp.logoff(0)
    assert events == ["write-envelope", "mark-start", "mark-failed"]
    await asyncio.sleep(0.1)
    assert server.messages == []
    assert not message.handoff_uncertain
