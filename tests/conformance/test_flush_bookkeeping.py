"""Issue #11, memory: what a flush remembers about the messages it offered does not grow
with the messages it sent. A flush must offer a message to a transport at most once
(the messages that come due again in it are remembered: retried, declined, handed over
with recipients left), but a message the offer finished can never come due again, so it
is only counted. The size of that bookkeeping is a count, not a time: no timing here."""

from __future__ import annotations

from mapispool.mapi import FLUSH_FORCE, FLUSH_UPLOAD
from mapispool.store import QueueState
from mapispool.testing import ResendLater

from .conftest import message

#: More than two claim pages (``offering.CLAIM_PAGE``), so the flush claims again after
#: sending whole pages.
MESSAGES = 150


async def test_a_flush_keeps_no_id_of_the_messages_it_sent(rig, session_factory):
    """Every message sent whole: the flush offered each once and kept none of their ids."""
    rig.script("a")
    session = await session_factory()
    for i in range(MESSAGES):
        await session.submit(message(f"bulk {i}"))
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
    assert result.transports["a"].sent == MESSAGES
    offers = session.spooler.flusher.offers["a"]
    assert offers.offered == MESSAGES
    assert offers.peak == 0
    assert len(offers) == 0


async def test_a_forced_flush_still_offers_a_retried_message_once(rig, session_factory):
    """A message that goes to the retry schedule is due again at once in a forced flush:
    it stays remembered (the only id kept), so it is offered once, and the flush ends;
    the messages sent around it are not kept."""
    script = rig.script("a").on("later", ResendLater())
    session = await session_factory()
    for i in range(MESSAGES // 2):
        await session.submit(message(f"before {i}"))
    later = await session.submit(message("later"))
    for i in range(MESSAGES // 2):
        await session.submit(message(f"after {i}"))
    result = await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    mine = result.transports["a"]
    assert (mine.sent, mine.retried) == (MESSAGES, 1)
    assert (await session.queue_entry(later)).state is QueueState.RETRY
    offers = session.spooler.flusher.offers["a"]
    assert (offers.offered, offers.peak) == (MESSAGES + 1, 1)
    assert [s for s, _ in script.sent].count("later") == 0
