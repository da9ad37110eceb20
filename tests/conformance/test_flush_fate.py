"""Issue #9, rules 8-12: a message's fate and the flush protocol around it.

Every test runs once per way of setting PR_RESPONSIBILITY (the ``marking`` fixture): the
MRXP style (mark every handled recipient, then answer) and marking on success only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_UPLOAD,
    NOTIFY_CRITICAL_ERROR,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_STATUS_CODE,
    STATUS_INBOUND_ENABLED,
    STATUS_INBOUND_FLUSH,
    STATUS_OUTBOUND_ENABLED,
    STATUS_OUTBOUND_FLUSH,
)
from mapispool.spi import InboundMessage, Support, TransportLogon
from mapispool.store import QueueState
from mapispool.testing import Defer, RecordingLogon, RecordingTransport

from .conftest import Rig, message

BOTH = FLUSH_UPLOAD | FLUSH_DOWNLOAD
FLUSH_BITS = STATUS_INBOUND_FLUSH | STATUS_OUTBOUND_FLUSH


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` if it never becomes true (the
    limit is generous: it only bounds a test that would otherwise hang)."""
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def settle_background() -> None:
    """Give background tasks every chance to run what is already scheduled (used before
    asserting that something did *not* happen)."""
    for _ in range(5):
        await asyncio.sleep(0.05)


def row_of(rows: list, name: str) -> dict:
    return next(r for r in rows if r[PR_DISPLAY_NAME] == name)


# -- rule 8: unroutable recipients get their NDR at once ----------------------------------


async def test_rule8_unroutable_recipients_bounce_at_the_next_send_receive(
    rig, session_factory, marking
):
    """A message whose only recipient no transport accepts fails with an NDR at the next
    Send/Receive, as does the unroutable recipient of a message its transport deferred."""
    rig.script("a", marking=marking).on("held back", Defer(release_on_flush=False))
    session = await session_factory()
    lonely = await session.submit(message("fax only"), recipients=["FAX:+331234"])
    mixed = await session.submit(message("held back"), recipients=["bob@example.test", "X400:c=fr"])
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert (await session.queue_entry(lonely)).state is QueueState.FAILED
    assert (await session.queue_entry(mixed)).state is QueueState.PARKED
    inbox = await session.folder("Inbox").messages()
    assert [m.message_class for m in inbox] == ["Report.IPM.Note.NDR"] * 2
    reports = b"".join(m.content for m in inbox)
    assert b"+331234" in reports
    assert b"c=fr" in reports


async def test_rule8_unroutable_recipients_bounce_at_once_in_the_background(
    rig, session_factory, marking
):
    """With send_immediately the NDR comes without any Send/Receive."""
    rig.script("a", marking=marking)
    session = await session_factory(send_immediately=True)
    entry_id = await session.submit(message("fax only"), recipients=["FAX:+331234"])

    async def failed() -> bool:
        return (await session.queue_entry(entry_id)).state is QueueState.FAILED

    await eventually(failed, "the unroutable message failed")
    assert [m.message_class for m in await session.folder("Inbox").messages()] == [
        "Report.IPM.Note.NDR"
    ]


async def test_rule8_a_transport_in_critical_error_counts_as_not_logged_on(
    rig, session_factory, marking
):
    """After NOTIFY_CRITICAL_ERROR a transport is as good as not logged on: mail for its
    address type waits (no NDR), while the rest of the message is sent."""
    rig.script("a", marking=marking)
    fax = rig.script("fax", marking=marking, address_types=["FAX"])
    session = await session_factory()
    assert fax.logon is not None
    fax.logon.support.spooler_notify(NOTIFY_CRITICAL_ERROR)
    entry_id = await session.submit(message("both"), recipients=["bob@example.test", "FAX:1"])
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert rig.scripts["a"].sent == [("both", ("bob@example.test",))]
    assert (await session.queue_entry(entry_id)).state is QueueState.QUEUED
    assert await session.folder("Inbox").count() == 0
    assert fax.sent == []


# -- rule 9: a transport's own FlushQueues during a full Send/Receive ---------------------


async def test_rule9_request_after_the_transports_turn_is_served_after_the_flush(
    rig, session_factory, marking
):
    """FlushQueues on a's own status object while a full Send/Receive is in b's turn (a
    is done) is run when the full flush ends: a's new mail goes, and no FLUSH bit stays."""
    rig.script("a", marking=marking, address_types=["A"])
    rig.script("b", marking=marking, address_types=["B"], submit_delay=0.2)
    session = await session_factory()
    await session.submit(message("for b"), recipients=["B:y"])
    rows = await session.status_table()
    a_status = session.open_status(row_of(rows, "a")[PR_ENTRYID])
    flush = asyncio.ensure_future(session.spooler_status().flush_queues(BOTH))

    async def b_is_sending() -> bool:
        return bool(rig.journal.of("b", "submit_message"))

    await eventually(b_is_sending, "b's turn began")
    late = await session.submit(message("late for a"), recipients=["A:x"])
    assert await a_status.flush_queues(FLUSH_UPLOAD) is None
    await flush

    async def late_sent() -> bool:
        return (await session.queue_entry(late)).state is QueueState.SENT

    await eventually(late_sent, "a's request was served after the full flush")
    assert [c.flags for c in rig.journal.of("a", "flush_queues")] == [BOTH, FLUSH_UPLOAD]
    await settle_background()
    for row in await session.status_table():
        assert not row[PR_STATUS_CODE] & FLUSH_BITS, row[PR_DISPLAY_NAME]


async def test_rule9_request_made_before_the_flush_is_not_dropped(rig, session_factory, marking):
    """A download request on a's own object, pending when an upload-only Send/Receive
    starts, is still served (the flush's upload turn does not swallow it)."""
    script = rig.script("a", marking=marking)
    script.deliver(1)
    session = await session_factory()
    rows = await session.status_table()
    a_status = session.open_status(row_of(rows, "a")[PR_ENTRYID])
    await a_status.flush_queues(FLUSH_DOWNLOAD)
    await session.spooler_status().flush_queues(FLUSH_UPLOAD, wait=True)

    async def received() -> bool:
        return await session.folder("Inbox").count() == 1

    await eventually(received, "a's download request was served")
    await settle_background()
    assert not row_of(await session.status_table(), "a")[PR_STATUS_CODE] & FLUSH_BITS


# -- rule 10: parallel flush of a message split across transports -------------------------


async def test_rule10_parallel_flush_sends_every_part_of_a_split_message(
    rig, session_factory, marking
):
    """Under parallel_flush, a message for A:x and B:y is sent by both a and b in the same
    flush, although one of them has it in flight when the other looks for work."""
    rig.script("a", marking=marking, address_types=["A"], submit_delay=0.1)
    rig.script("b", marking=marking, address_types=["B"], submit_delay=0.1)
    session = await session_factory(parallel_flush=True)
    entry_id = await session.submit(message("split"), recipients=["A:x", "B:y"])
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert rig.scripts["a"].sent == [("split", ("x",))]
    assert rig.scripts["b"].sent == [("split", ("y",))]
    assert (await session.queue_entry(entry_id)).state is QueueState.SENT
    assert result.transports["a"].sent + result.transports["b"].sent == 2


# -- rule 11: NOTIFY_NEWMAIL during the transport's own StartMessage loop -----------------


class AnnouncingLogon(RecordingLogon):
    """Announces new mail (NOTIFY_NEWMAIL) from inside its first ``start_message``."""

    announced = False

    async def start_message(self, message: InboundMessage) -> None:
        if not self.announced:
            self.announced = True
            self.script.announce_newmail()
        await super().start_message(message)


class AnnouncingTransport(RecordingTransport):
    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        await super().transport_logon(support, flags)
        return AnnouncingLogon(support, self.script)


def announcing_profile(rig: Rig, marking: str) -> dict:
    script = rig.script("a", marking=marking)
    script.deliver(2)
    provider = "tests.conformance.test_flush_fate:AnnouncingTransport"
    return {"transports": {"a": {"provider": provider, "script": script}}}


def start_messages_after_the_loop(rig: Rig) -> list[str]:
    trace = [c for c in rig.flush_trace("a") if "start_message" in c or "notify" in c]
    return trace[len(trace) - trace[::-1].index("a.start_message") :]


async def test_rule11_newmail_during_a_flush_loop_is_absorbed(rig, session_factory, marking):
    """NOTIFY_NEWMAIL sent from start_message during a Send/Receive adds no start_message
    call after the loop: the loop that is running serves it."""
    session = await session_factory(**announcing_profile(rig, marking))
    result = await session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
    assert result.transports["a"].received == 2
    await settle_background()
    starts = rig.journal.trace("a", "start_message")
    assert len(starts) == 3, rig.flush_trace("a")  # two saved, one empty: the loop's end
    assert start_messages_after_the_loop(rig) == ["a.transport_notify 0x40000"]


async def test_rule11_newmail_during_a_background_loop_is_absorbed(rig, session_factory, marking):
    """The same outside flushes: NOTIFY_NEWMAIL starts a StartMessage loop, and a second
    NOTIFY_NEWMAIL sent from inside that loop does not start another one."""
    options = announcing_profile(rig, marking)
    session = await session_factory(**options)
    rig.scripts["a"].logon.announced = True  # type: ignore[union-attr]
    rig.scripts["a"].announce_newmail()

    async def received() -> bool:
        return await session.folder("Inbox").count() == 2

    await eventually(received, "the announced mail was received")
    await settle_background()
    assert len(rig.journal.trace("a", "start_message")) == 3, rig.flush_trace("a")
    # Now announce from inside the loop: exactly one loop runs.
    rig.journal.clear()
    rig.scripts["a"].deliver(1)
    rig.scripts["a"].logon.announced = False  # type: ignore[union-attr]
    rig.scripts["a"].announce_newmail()

    async def third() -> bool:
        return await session.folder("Inbox").count() == 3

    await eventually(third, "the second announcement was served")
    await settle_background()
    assert len(rig.journal.trace("a", "start_message")) == 2, rig.flush_trace("a")


# -- rule 12: a row claims only the directions the transport has --------------------------


class SendOnlyLogon(TransportLogon):
    """A minimal outbound transport: address types and submit_message, nothing else."""

    def address_types(self) -> tuple[str, ...]:
        return ("SEND",)


class SendOnlyTransport(RecordingTransport):
    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        return SendOnlyLogon(support)


async def test_rule12_status_rows_claim_only_the_directions_a_transport_has(
    rig, session_factory, marking, tmp_path: Path, monkeypatch
):
    """smtp and a maildir without ``path`` only send; imap, pop3 and a transport without
    address types only receive; a maildir with ``path`` and the recording transport do
    both. Each row's ENABLED bits say exactly that."""
    monkeypatch.setenv("FATE_TEST_PW", "secret")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    inbound_common = {
        "host": "127.0.0.1",
        "port": 9,
        "tls": "none",
        "username": "u",
        "password_env": "FATE_TEST_PW",
        "allow_plaintext_auth": True,
    }
    rig.script("both", marking=marking)
    rig.script("listen", marking=marking, address_types=())
    transports = {
        "both": {"provider": "recording", "script": rig.scripts["both"]},
        "listen": {"provider": "recording", "script": rig.scripts["listen"]},
        "smtp": {"provider": "smtp", "host": "127.0.0.1", "port": 9, "tls": "none"},
        "imap": {"provider": "imap", **inbound_common},
        "pop3": {"provider": "pop3", **inbound_common},
        "md-send": {"provider": "maildir"},
        "md-both": {"provider": "maildir", "path": str(maildir)},
        "minimal": {"provider": "tests.conformance.test_flush_fate:SendOnlyTransport"},
    }
    session = await session_factory(transports=transports)
    rows = await session.status_table()
    expected = {
        "both": (True, True),
        "listen": (True, False),
        "smtp": (False, True),
        "imap": (True, False),
        "pop3": (True, False),
        "md-send": (False, True),
        "md-both": (True, True),
        "minimal": (False, True),
    }
    seen = {}
    for name in expected:
        code = row_of(rows, name)[PR_STATUS_CODE]
        seen[name] = (bool(code & STATUS_INBOUND_ENABLED), bool(code & STATUS_OUTBOUND_ENABLED))
    assert seen == expected
