"""The flush protocol, call by call, for every numbered point of DESIGN §6."""

from __future__ import annotations

import asyncio

import pytest

from mapispool.mapi import (
    FLUSH_ASYNC_OK,
    FLUSH_DOWNLOAD,
    FLUSH_UPLOAD,
    MAPI_E_BUSY,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_SUPPORT,
    MAPI_E_NOT_FOUND,
    PR_ENTRYID,
    STATUS_VALIDATE_STATE,
    MapiError,
)
from mapispool.session import AsyncFlushHandle

from .conftest import message

BOTH = FLUSH_UPLOAD | FLUSH_DOWNLOAD


async def test_three_transports_flushed_in_transport_order(rig, session_factory):
    """With no target every transport runs the 14 steps, one after another, in order."""
    for name in ("a", "b", "c"):
        rig.script(name, address_types=[name.upper()])
    rig.scripts["b"].deliver(1)
    session = await session_factory(transport_order=["b", "c", "a"])
    await session.submit(message("to a"), recipients=["A:x"])
    await session.submit(message("to c"), recipients=["C:y"])
    result = await session.spooler_status().flush_queues(BOTH)
    assert rig.flush_trace() == [
        "b.flush_queues 0x6",
        "b.transport_notify 0x80000",
        "b.start_message",
        "b.start_message",
        "b.transport_notify 0x40000",
        "c.flush_queues 0x6",
        "c.submit_message 0x0 'to c'",
        "c.end_message 'to c'",
        "c.transport_notify 0x80000",
        "c.start_message",
        "c.transport_notify 0x40000",
        "a.flush_queues 0x6",
        "a.submit_message 0x0 'to a'",
        "a.end_message 'to a'",
        "a.transport_notify 0x80000",
        "a.start_message",
        "a.transport_notify 0x40000",
    ]
    assert list(result.transports) == ["b", "c", "a"]
    assert (result.transports["a"].sent, result.transports["b"].received) == (1, 1)


async def test_targeted_flush_touches_only_that_transport(rig, session_factory):
    """A target (a transport row's PR_ENTRYID) flushes that transport alone."""
    rig.script("a")
    rig.script("b", address_types=["FAX"])
    session = await session_factory()
    await session.submit(message("smtp"), recipients=["bob@example.test"])
    await session.submit(message("fax"), recipients=["FAX:123"])
    rows = await session.status_table()
    target = next(r[PR_ENTRYID] for r in rows if r[0x3001001F] == "b")
    await session.spooler_status().flush_queues(FLUSH_UPLOAD, target)
    assert {c.split(".")[0] for c in rig.flush_trace()} == {"b"}
    assert rig.scripts["b"].sent == [("fax", ("123",))]
    assert [e.subject for e in await session.outgoing_queue()] == ["smtp"]


async def test_upload_only_never_calls_start_message(rig, session_factory):
    """FLUSH_UPLOAD sets only STATUS_OUTBOUND_FLUSH (MRXP), so no StartMessage loop."""
    rig.script("a").deliver(2)
    session = await session_factory()
    await session.submit(message("one"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert rig.flush_trace() == [
        "a.flush_queues 0x2",
        "a.submit_message 0x0 'one'",
        "a.end_message 'one'",
        "a.transport_notify 0x80000",
        "a.transport_notify 0x40000",
    ]


async def test_download_only_never_submits(rig, session_factory):
    """FLUSH_DOWNLOAD leaves queued mail alone and runs the StartMessage loop."""
    rig.script("a").deliver(1)
    session = await session_factory()
    await session.submit(message("stays"))
    result = await session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
    assert rig.flush_trace() == [
        "a.flush_queues 0x4",
        "a.transport_notify 0x80000",
        "a.start_message",
        "a.start_message",
        "a.transport_notify 0x40000",
    ]
    assert result.transports["a"].received == 1
    assert len(await session.outgoing_queue()) == 1


async def test_seed_style_sets_inbound_bit_after_end_outbound_flush(rig, session_factory):
    """Step 9: a transport that sets STATUS_INBOUND_FLUSH only on NOTIFY_END_OUTBOUND_FLUSH
    still gets its StartMessage loop."""
    rig.script("a", style="seed").deliver(2)
    session = await session_factory()
    result = await session.spooler_status().flush_queues(BOTH)
    assert rig.flush_trace() == [
        "a.flush_queues 0x6",
        "a.transport_notify 0x80000",
        "a.start_message",
        "a.start_message",
        "a.start_message",
        "a.transport_notify 0x40000",
    ]
    assert result.transports["a"].received == 2


async def test_transport_clearing_its_bit_stops_the_loop(rig, session_factory):
    """Clearing STATUS_OUTBOUND_FLUSH mid-loop ends the outbound part at once."""
    rig.script("a", stop_outbound_after=1)
    session = await session_factory()
    for n in range(3):
        await session.submit(message(f"m{n}"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert rig.journal.trace("a", "submit_message") == ["a.submit_message 0x0 'm0'"]
    assert [e.subject for e in await session.outgoing_queue()] == ["m1", "m2"]


async def test_transport_clearing_inbound_bit_stops_start_message(rig, session_factory):
    """Clearing STATUS_INBOUND_FLUSH after one message ends the StartMessage loop."""
    rig.script("a", stop_inbound_after=1).deliver(3)
    session = await session_factory()
    result = await session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
    assert result.transports["a"].received == 1
    assert len(rig.journal.of("a", "start_message")) == 1


async def test_async_flush_returns_at_once_and_second_request_is_busy(rig, session_factory):
    """FLUSH_ASYNC_OK returns a handle; a second request while it runs is MAPI_E_BUSY."""
    rig.script("a", submit_delay=0.2)
    session = await session_factory()
    await session.submit(message("slow"))
    handle = await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_ASYNC_OK)
    assert isinstance(handle, AsyncFlushHandle)
    assert not handle.done
    with pytest.raises(MapiError) as busy:
        await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert busy.value.hresult == MAPI_E_BUSY
    with pytest.raises(MapiError) as busy_async:
        await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_ASYNC_OK)
    assert busy_async.value.hresult == MAPI_E_BUSY
    result = await handle.wait(5)
    assert handle.done
    assert result.transports["a"].sent == 1


async def test_synchronous_caller_may_wait_for_a_running_flush(rig, session_factory):
    """wait=True queues a synchronous request behind the running flush instead of BUSY."""
    rig.script("a", submit_delay=0.1)
    session = await session_factory()
    await session.submit(message("first"))
    handle = await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_ASYNC_OK)
    second = await session.spooler_status().flush_queues(FLUSH_UPLOAD, wait=True)
    assert (await handle.wait(5)).transports["a"].sent == 1
    assert second.transports["a"].sent == 0


async def test_errors_of_flush_queues(rig, session_factory):
    """No direction is INVALID_PARAMETER, an unknown target NOT_FOUND, and a target without
    STATUS_FLUSH_QUEUES in PR_RESOURCE_METHODS NO_SUPPORT."""
    rig.script("a", resource_methods=STATUS_VALIDATE_STATE)
    session = await session_factory()
    status = session.spooler_status()
    with pytest.raises(MapiError) as invalid:
        await status.flush_queues(0)
    assert invalid.value.hresult == MAPI_E_INVALID_PARAMETER
    with pytest.raises(MapiError) as missing:
        await status.flush_queues(FLUSH_UPLOAD, b"no such row")
    assert missing.value.hresult == MAPI_E_NOT_FOUND
    target = (await session.status_table())[1][PR_ENTRYID]
    with pytest.raises(MapiError) as unsupported:
        await status.flush_queues(FLUSH_UPLOAD, target)
    assert unsupported.value.hresult == MAPI_E_NO_SUPPORT
    with pytest.raises(MapiError) as on_transport:
        await session.open_status(target).flush_queues(FLUSH_UPLOAD)
    assert on_transport.value.hresult == MAPI_E_NO_SUPPORT


async def test_flush_on_a_transport_status_object_is_serviced_later(rig, session_factory):
    """The transport's own status object only sets the row bits and returns; the spooler
    then runs the protocol for that transport alone."""
    rig.script("a")
    rig.script("b").deliver(1)
    session = await session_factory()
    target = (await session.status_table())[2][PR_ENTRYID]
    returned = await session.open_status(target).flush_queues(BOTH)
    assert returned is None
    assert rig.flush_trace() == []  # nothing ran yet: the caller got control back first
    for _ in range(100):
        if rig.journal.of("b", "transport_notify") and rig.flush_trace()[-1].endswith("0x40000"):
            break
        await asyncio.sleep(0.01)
    assert rig.flush_trace() == [
        "b.flush_queues 0x6",
        "b.transport_notify 0x80000",
        "b.start_message",
        "b.start_message",
        "b.transport_notify 0x40000",
    ]
    assert len(await session.folder("Inbox").messages()) == 1


async def test_shutdown_during_a_flush_sends_one_combined_end_notification(rig, session_factory):
    """Logoff in the middle of a flush: the call in progress finishes, then one
    transport_notify(END_INBOUND_FLUSH | END_OUTBOUND_FLUSH), then logoff; nothing lost."""
    rig.script("a", submit_delay=0.2)
    session = await session_factory()
    first = await session.submit(message("m0"))
    await session.submit(message("m1"))
    handle = await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_ASYNC_OK)
    for _ in range(500):  # the first submit is under way once the journal shows it
        if rig.journal.of("a", "submit_message"):
            break
        await asyncio.sleep(0.01)
    await session.logoff()
    result = await handle.wait(5)
    trace = rig.flush_trace("a")
    assert trace[:3] == ["a.flush_queues 0x2", "a.submit_message 0x0 'm0'", "a.end_message 'm0'"]
    assert trace[3:] == [
        "a.transport_notify 0xC0000",
        "a.transport_notify 0x30000",
        "a.logoff 0x1",
        "a.shutdown",
    ]
    assert result.interrupted
    again = await rig.logon()
    try:
        queue = await again.outgoing_queue()
        assert [e.subject for e in queue] == ["m1"]
        assert [m.entry_id for m in await again.folder("Sent Items").messages()] == [first]
    finally:
        await again.logoff()


async def test_transports_sharing_a_resource_never_flush_at_once(rig, session_factory):
    """Even with parallel_flush, two transports that share "modem" take turns, while a
    transport with no shared resource runs beside them."""
    rig.script("a", resources=frozenset({"modem"}), submit_delay=0.05)
    rig.script("b", resources=frozenset({"modem"}), submit_delay=0.05)
    rig.script("c", address_types=["FAX"], submit_delay=0.05)
    session = await session_factory(parallel_flush=True)
    await session.submit(message("x"))
    await session.submit(message("f"), recipients=["FAX:1"])
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)

    def window(name):
        calls = rig.journal.of(name)
        starts = [c.at for c in calls if c.method == "flush_queues"]
        ends = [c.at for c in calls if c.method == "transport_notify" and c.flags == 0x40000]
        return starts[0], ends[-1]

    a, b = window("a"), window("b")
    assert a[1] <= b[0] or b[1] <= a[0]


async def test_not_me_falls_through_to_the_next_capable_transport(rig, session_factory):
    """MAPI_E_NOT_ME: no end_message; the message is offered to the next transport."""
    from mapispool.testing import NotMe

    rig.script("a").on("hop", NotMe())
    rig.script("b")
    session = await session_factory()
    await session.submit(message("hop"))
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert rig.journal.trace(None, "submit_message", "end_message") == [
        "a.submit_message 0x0 'hop'",
        "b.submit_message 0x0 'hop'",
        "b.end_message 'hop'",
    ]
    assert [m.subject for m in await session.folder("Sent Items").messages()] == ["hop"]


async def test_recipient_nobody_takes_gets_an_ndr(rig, session_factory):
    """A recipient whose address type no transport accepts is reported in an NDR naming
    it; the other recipients are delivered; an NDR never produces another NDR."""
    rig.script("a")
    session = await session_factory()
    await session.submit(message("mixed"), recipients=["bob@example.test", "X400:c=fr"])
    await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    inbox = await session.folder("Inbox").messages()
    assert [m.message_class for m in inbox] == ["Report.IPM.Note.NDR"]
    assert b"c=fr" in inbox[0].content
    assert b"no transport accepts address type X400" in inbox[0].content
    assert rig.scripts["a"].sent == [("mixed", ("bob@example.test",))]
    assert [m.subject for m in await session.folder("Sent Items").messages()] == ["mixed"]


async def test_a_flush_serves_the_queue_as_it_found_it(rig, session_factory):
    """Mail submitted while a flush runs waits for the next one: a steady stream of new
    mail cannot keep a Send/Receive from reaching its inbound part and ending."""
    rig.script("a", submit_delay=0.1).deliver(1)
    session = await session_factory()
    await session.submit(message("before"))
    flags = FLUSH_UPLOAD | FLUSH_DOWNLOAD | FLUSH_ASYNC_OK
    handle = await session.spooler_status().flush_queues(flags)
    for _ in range(500):
        if rig.journal.of("a", "submit_message"):
            break
        await asyncio.sleep(0.01)
    await session.submit(message("during"))
    result = await handle.wait(5)
    assert result.transports["a"].sent == 1
    assert result.transports["a"].received == 1
    assert [e.subject for e in await session.outgoing_queue()] == ["during"]
