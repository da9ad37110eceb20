"""Every outcome of SubmitMessage/EndMessage, deferral, retries, reports and sent items."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from mapispool.mapi import (
    BEGIN_DEFERRED,
    FLUSH_DOWNLOAD,
    FLUSH_FORCE,
    FLUSH_UPLOAD,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_WAIT,
    NOTIFY_ABORT_DEFERRED,
    NOTIFY_CANCEL_MESSAGE,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_OBJECT_TYPE,
    PR_PROVIDER_DISPLAY,
    PR_RESOURCE_METHODS,
    PR_RESOURCE_TYPE,
    PR_SENTMAIL_ENTRYID,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_INBOUND_ENABLED,
    STATUS_OUTBOUND_ENABLED,
)
from mapispool.store import QueueState
from mapispool.testing import Defer, Raise, Refuse, ResendLater, ResendNow

from .conftest import message


async def test_deferred_message_is_parked_then_resubmitted_with_begin_deferred(
    rig, session_factory
):
    """END_DONT_RESEND parks the message; NOTIFY_SENTDEFERRED at the next flush brings it
    back through SubmitMessage(BEGIN_DEFERRED), and then it is sent."""
    rig.script("a").on("later", Defer())
    session = await session_factory()
    entry_id = await session.submit(message("later"))
    first = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert first.transports["a"].deferred == 1
    assert (await session.queue_entry(entry_id)).state is QueueState.PARKED
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    submits = rig.journal.of("a", "submit_message")
    assert [c.flags for c in submits] == [0, BEGIN_DEFERRED]
    assert (await session.queue_entry(entry_id)).state is QueueState.SENT


async def test_cancelling_a_parked_message_tells_the_transport(rig, session_factory):
    """Cancel of a deferred message: transport_notify(ABORT_DEFERRED | CANCEL_MESSAGE)."""
    rig.script("a").on("drop", Defer(release_on_flush=False))
    session = await session_factory()
    entry_id = await session.submit(message("drop"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    await session.cancel(entry_id)
    cancel = rig.journal.of("a", "transport_notify")[-1]
    assert cancel.flags == NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE
    assert cancel.data == entry_id
    assert (await session.queue_entry(entry_id)).state is QueueState.CANCELLED
    assert [m.entry_id for m in await session.folder("Deleted Items").messages()] == [entry_id]


async def test_sentdeferred_outside_a_flush_sends_in_the_background(rig, session_factory):
    """With send_immediately, NOTIFY_SENTDEFERRED outside a flush resubmits at once."""
    script = rig.script("a").on("bg", Defer(release_on_flush=False))
    session = await session_factory(send_immediately=True)
    entry_id = await session.submit(message("bg"))
    for _ in range(200):
        if (await session.queue_entry(entry_id)).state is QueueState.PARKED:
            break
        await asyncio.sleep(0.01)
    script.release_deferred(entry_id)
    for _ in range(200):
        if (await session.queue_entry(entry_id)).state is QueueState.SENT:
            break
        await asyncio.sleep(0.01)
    assert (await session.queue_entry(entry_id)).state is QueueState.SENT


async def test_wait_and_network_error_retry_after_the_given_time(rig, session_factory):
    """MAPI_E_WAIT / MAPI_E_NETWORK_ERROR with retry_after: kept, retried after that time;
    FLUSH_FORCE ignores the wait; one failing message never blocks the others."""
    rig.script("a").on("w", Raise(MAPI_E_WAIT, retry_after=600)).on(
        "n", Raise(MAPI_E_NETWORK_ERROR, retry_after=600)
    )
    session = await session_factory()
    w = await session.submit(message("w"))
    n = await session.submit(message("n"))
    ok = await session.submit(message("ok"))
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert (result.transports["a"].retried, result.transports["a"].sent) == (2, 1)
    entry = await session.queue_entry(w)
    assert entry.state is QueueState.RETRY
    assert entry.not_before > time.time() + 500
    assert "scripted failure" in (entry.last_error or "")
    assert (await session.queue_entry(ok)).state is QueueState.SENT
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert len(rig.journal.of("a", "submit_message")) == 3  # backoff respected
    forced = await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    assert forced.transports["a"].sent == 2
    assert (await session.queue_entry(n)).state is QueueState.SENT


async def test_resend_now_and_resend_later(rig, session_factory):
    """END_RESEND_NOW resubmits at once; END_RESEND_LATER leaves it for a later pass."""
    rig.script("a").on("now", ResendNow()).on("later", ResendLater())
    session = await session_factory()
    now = await session.submit(message("now"))
    later = await session.submit(message("later"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert rig.journal.trace("a", "submit_message") == [
        "a.submit_message 0x0 'now'",
        "a.submit_message 0x0 'now'",
        "a.submit_message 0x0 'later'",
    ]
    assert (await session.queue_entry(now)).state is QueueState.SENT
    assert (await session.queue_entry(later)).state is QueueState.RETRY


async def test_status_recips_failures_become_one_ndr(rig, session_factory):
    """Recipients a transport reports failed get one NDR naming each and the reason."""
    rig.script("a").on("partly", Refuse(("bad@example.test",), "550 5.1.1 no such user"))
    session = await session_factory()
    await session.submit(message("partly"), recipients=["good@example.test", "bad@example.test"])
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert result.transports["a"].sent == 1
    assert result.transports["a"].failed == 1
    (ndr,) = await session.folder("Inbox").messages()
    assert ndr.message_class == "Report.IPM.Note.NDR"
    assert b"bad@example.test" in ndr.content
    assert b"550 5.1.1 no such user" in ndr.content
    assert b"good@example.test" not in ndr.content.split(b"\r\n\r\n", 1)[1].split(b"rfc822")[0]


async def test_message_with_every_recipient_failed_stays_visibly_failed(rig, session_factory):
    """No recipient delivered: the message stays in the Outbox, failed, with an NDR."""
    rig.script("a").on("dead", Refuse(("bob@example.test",)))
    session = await session_factory()
    entry_id = await session.submit(message("dead"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert (await session.queue_entry(entry_id)).state is QueueState.FAILED
    assert [m.entry_id for m in await session.folder("Outbox").messages()] == [entry_id]
    assert [e.entry_id for e in await session.outgoing_queue()] == [entry_id]


async def test_sent_items_handling(rig, session_factory):
    """Default: Sent Items; PR_DELETE_AFTER_SUBMIT: deleted; PR_SENTMAIL_ENTRYID: there."""
    rig.script("a")
    session = await session_factory()
    kept = await session.submit(message("kept"))
    gone = await session.submit(message("gone"), delete_after_submit=True)
    elsewhere = message("elsewhere")
    deleted_items = session.folder("Deleted Items").entry_id
    # a client property set before submission
    third = await session.submit(elsewhere, props={PR_SENTMAIL_ENTRYID: deleted_items})
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert [m.entry_id for m in await session.folder("Sent Items").messages()] == [kept]
    assert [m.entry_id for m in await session.folder("Deleted Items").messages()] == [third]
    assert (await session.folder("Outbox").count()) == 0
    assert gone not in [e.entry_id for e in await session.outgoing_queue()]


async def test_send_later_waits_for_its_time(rig, session_factory):
    """PR_DEFERRED_SEND_TIME in the future: not sent by a flush; in the past: sent."""
    rig.script("a")
    session = await session_factory()
    future = await session.submit(
        message("future"), deferred_send_time=datetime.now(UTC) + timedelta(hours=1)
    )
    past = await session.submit(
        message("past"), deferred_send_time=datetime.now(UTC) - timedelta(minutes=1)
    )
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    assert (await session.queue_entry(future)).state is QueueState.DEFERRED
    assert (await session.queue_entry(past)).state is QueueState.SENT


async def test_status_table_rows_and_change_notifications(rig, session_factory):
    """The spooler row then one row per transport with every required column, and every
    change reaches a callback and an async iterator."""
    rig.script("a")
    session = await session_factory()
    rows = await session.status_table()
    assert [r[PR_DISPLAY_NAME] for r in rows] == ["Spooler", "a"]
    spooler_row, a_row = rows
    assert (spooler_row[PR_RESOURCE_TYPE], spooler_row[PR_RESOURCE_METHODS]) == (0x25, 0x9)
    assert a_row[PR_RESOURCE_TYPE] == 0x24
    assert a_row[PR_OBJECT_TYPE] == 0xA
    assert a_row[PR_PROVIDER_DISPLAY] == "recording"
    assert a_row[PR_STATUS_CODE] & (STATUS_INBOUND_ENABLED | STATUS_OUTBOUND_ENABLED)
    assert a_row[PR_STATUS_STRING] == "Available"
    assert session.open_status(a_row[PR_ENTRYID]).row[PR_DISPLAY_NAME] == "a"
    seen = []
    unsubscribe = session.spooler.status.subscribe(lambda name, row: seen.append(name))
    iterator = session.spooler.status.changes()
    waiter = asyncio.ensure_future(iterator.__anext__())
    await asyncio.sleep(0)
    await session.submit(message("x"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD)
    name, row = await asyncio.wait_for(waiter, 2)
    await iterator.aclose()
    unsubscribe()
    assert "a" in seen
    assert "spooler" in seen
    assert name in ("a", "spooler")
    assert PR_STATUS_CODE in row
