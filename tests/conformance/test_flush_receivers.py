"""Transports that only receive take their flush turn while the senders take theirs
(issue #11, the empty Send/Receive): the senders keep MAPI's transport order."""

from __future__ import annotations

from mapispool.mapi import FLUSH_DOWNLOAD, FLUSH_UPLOAD

from .conftest import message

BOTH = FLUSH_UPLOAD | FLUSH_DOWNLOAD


async def test_receive_only_transports_overlap_the_senders_turns(rig, session_factory):
    """ "in" (no address type: no queued message can go to it) starts its 14 steps before
    "a" ends its own; "a" and "b" still run theirs one after the other, in order, and
    the result lists every transport in transport order."""
    rig.script("a", address_types=["A"])
    rig.script("b", address_types=["B"])
    rig.script("in", address_types=[]).deliver(1)
    session = await session_factory(transport_order=["a", "in", "b"])
    await session.submit(message("to a"), recipients=["A:x"])
    await session.submit(message("to b"), recipients=["B:y"])
    result = await session.spooler_status().flush_queues(BOTH)
    trace = rig.flush_trace()
    assert [c for c in trace if not c.startswith("in.")] == [
        "a.flush_queues 0x6",
        "a.submit_message 0x0 'to a'",
        "a.end_message 'to a'",
        "a.transport_notify 0x80000",
        "a.start_message",
        "a.transport_notify 0x40000",
        "b.flush_queues 0x6",
        "b.submit_message 0x0 'to b'",
        "b.end_message 'to b'",
        "b.transport_notify 0x80000",
        "b.start_message",
        "b.transport_notify 0x40000",
    ]
    assert rig.flush_trace("in") == [
        "in.flush_queues 0x6",
        "in.transport_notify 0x80000",
        "in.start_message",
        "in.start_message",
        "in.transport_notify 0x40000",
    ]
    assert trace.index("in.flush_queues 0x6") < trace.index("a.transport_notify 0x40000")
    assert list(result.transports) == ["a", "in", "b"]
    assert (result.transports["a"].sent, result.transports["b"].sent) == (1, 1)
    assert result.transports["in"].received == 1
    assert result.ok
