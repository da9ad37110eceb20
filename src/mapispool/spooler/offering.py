"""Choosing and offering messages: which queued messages a transport gets now, offering
them (up to ``max_in_flight`` at once), bouncing recipients no transport accepts, and
putting back in the queue what an error left in flight."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Protocol

from ..mapi import MAPI_E_NOT_FOUND, PR_SENDER_EMAIL_ADDRESS, MapiError
from ..store import Claim, Note, Outcome, QueueEntry, QueueState, Route, Store
from .attempts import Offered
from .handles import LogonHandle
from .outbound import OutboundRunner
from .pages import Exclusions, parked_pages
from .retry import RetryPolicy
from .routing import Registration, route
from .sender_routing import by_sender

log = logging.getLogger("mapispool.spooler")

#: How many messages one claim takes at most (memory is this many messages, whatever
#: the length of the queue; contents up to ``INLINE_LIMIT`` come with them).
CLAIM_PAGE = 64

#: How many offers beyond a transport's ``max_in_flight`` may be under way at once: the
#: ones whose outcome is still being recorded while the transport sends the next. It
#: bounds the messages held in memory and the outcomes not yet committed.
RECORDS_AHEAD = 16

#: Seconds between two tries of a flush waiting for a lane another worker holds.
LANE_WAIT = 0.2


class OfferingHost(Protocol):
    """What the queue work needs from the spooler."""

    store: Store
    retry_policy: RetryPolicy
    outbound: OutboundRunner
    handles: list[LogonHandle]

    def registrations(self) -> list[Registration]: ...

    def all_logged_on(self) -> bool: ...


class Offering:
    """The spooler's queue work; one per spooler."""

    def __init__(self, spooler: OfferingHost) -> None:
        self.spooler = spooler
        #: Messages being offered right now: entry id -> (transport, set when done).
        self.busy: dict[bytes, tuple[str, asyncio.Event]] = {}
        #: An offer ended in an error of the spooler's own (the store failed): its message
        #: may be left in_flight with nobody sending it, to be put back in the queue.
        self.stranded = False
        #: Messages whose offer failed that way (entry id -> error), and, once put back,
        #: until when they wait (entry id -> time.time()) so that one message that always
        #: fails never keeps the others from being sent; FLUSH_FORCE ignores the wait.
        self.failed: dict[bytes, str] = {}
        self.held_back: dict[bytes, float] = {}
        #: One claim at a time, with its ``busy`` entries: a parallel flush's transports
        #: claim concurrently, and on a store that claims on several connections at once
        #: (PostgreSQL) another transport's claim could otherwise see a message in flight
        #: (or skip its locked row) before it is in ``busy``, so ``wait_for_others``
        #: would not wait for it and a split message would miss that flush.
        self._claiming = asyncio.Lock()

    @property
    def store(self) -> Store:
        return self.spooler.store

    @asynccontextmanager
    async def lane(
        self, name: str, lanes: int = 1, *, wait: Callable[[], bool] | None = None
    ) -> AsyncIterator[bool]:
        """Hold one of transport ``name``'s ``lanes`` on a store that many workers share,
        for one page (claim and offer): True when held, False when other workers hold
        them all (and ``wait`` is None or says to stop waiting). With one lane, the
        default, one worker at a time sends through the transport: submit order holds
        across workers. A one-spooler store always gives a lane."""
        lane = await self.store.try_lane(name, lanes)
        while lane is None and wait is not None and wait():
            await asyncio.sleep(LANE_WAIT)
            lane = await self.store.try_lane(name, lanes)
        if lane is None:
            yield False
            return
        try:
            yield True
        finally:
            with suppress(MapiError):  # the database away: its session ends, the lane too
                await self.store.release_lane(name, lane)

    async def claim_work(
        self,
        handle: LogonHandle,
        *,
        force: bool,
        exclude: Collection[bytes],
        submitted_before: float | None = None,
        limit: int = CLAIM_PAGE,
        first: bool = True,
    ) -> list[Claim]:
        """Claim the next page of messages to offer ``handle`` now, in submit order: the
        deferred ones it released, then due messages with a pending recipient that
        routing gives to it, submitted before ``submitted_before`` if given (a flush
        serves the queue as it found it, so that a steady stream of new mail cannot keep
        it from ever ending). Each claimed message is in flight and ``busy`` until
        ``offer_many`` offers or releases it; memory is one page, whatever the queue.
        The ``first`` page of a pass also expires overdue messages (once per pass: that
        query reads every waiting message)."""
        if first:
            await self.expire_overdue()
        now = time.time()
        for entry_id, until in list(self.held_back.items()):
            if until <= now:
                del self.held_back[entry_id]
        # ``exclude`` (a flush's offered messages) is read where it is, never copied; the
        # small sets that other tasks change meanwhile are snapshots.
        held_back = frozenset() if force else frozenset(self.held_back)
        order = tuple((n, tuple(t)) for n, t in self.spooler.registrations())
        route = Route(handle.name, order, senders=self.spooler.outbound.senders)
        async with self._claiming:
            skip = Exclusions(exclude, held_back, frozenset(self.busy))
            claims = await self.store.claim(
                route, now=now, limit=limit, ignore_backoff=force,
                submitted_before=submitted_before, exclude=skip,
                released=set(handle.released),
            )  # fmt: skip
            for claim in claims:
                self.busy[claim.entry_id] = (handle.name, asyncio.Event())
                if claim.claimed_from is QueueState.PARKED:
                    handle.released.discard(claim.entry_id)
        return claims

    async def wait_for_others(
        self,
        handle: LogonHandle,
        exclude: Collection[bytes],
        submitted_before: float | None = None,
    ) -> bool:
        """Wait for messages another transport is sending right now (a parallel flush)
        that still have recipients for ``handle``: the store shows them in flight, not
        due, yet they are ``handle``'s work too. True when it waited for one (claim
        again then)."""
        registrations = self.spooler.registrations()
        waits = []
        for entry_id, (name, done) in list(self.busy.items()):
            if name == handle.name or entry_id in exclude:
                continue
            entry = await self.store.queue_entry(entry_id, with_recipients=False)
            if submitted_before is not None and entry.submit_time > submitted_before:
                continue
            types = (await self.store.pending_types([entry.seq]))[entry.seq]
            regs = await self._for_sender(registrations, entry_id)
            if any(route(t, regs, entry.declined) == handle.name for t in types):
                waits.append(done.wait())
        if waits:
            await asyncio.gather(*waits)
        return bool(waits)

    async def _for_sender(
        self, registrations: list[Registration], entry_id: bytes
    ) -> list[Registration]:
        """``registrations`` in the order that applies to message ``entry_id``
        (``sender_routing``; a read of its props only when some transport has
        ``senders``)."""
        senders = self.spooler.outbound.senders
        if not senders:
            return registrations
        stored = await self.store.message(entry_id, content=False)
        return by_sender(registrations, stored.props.get(PR_SENDER_EMAIL_ADDRESS), senders)

    async def bounce_unroutable(self) -> None:
        """Give every waiting message whose pending recipients include one that no
        logged-on transport accepts its NDR for that recipient now (issue #9 rule 8), not
        only at the end of its lifetime. Nothing bounces while a transport is not logged
        on (it failed to, or sent NOTIFY_CRITICAL_ERROR): it might take the recipient."""
        if not self.spooler.all_logged_on():
            return
        registrations = self.spooler.registrations()

        async def bounce(entries: list[QueueEntry]) -> None:
            types = await self.store.pending_types([e.seq for e in entries])
            for entry in entries:
                if any(route(t, registrations, entry.declined) is None for t in types[entry.seq]):
                    await self.spooler.outbound.settle(entry.entry_id)

        for handle in self.spooler.handles:
            async for page in parked_pages(self.store, handle.name):
                await bounce(page)
        # Page by page, so that memory does not grow with the queue.
        after: tuple[float, int] | None = None
        while True:
            page = await self.store.due_entries(time.time(), ignore_backoff=True, after=after)
            if not page:
                break
            after = (page[-1].submit_time, page[-1].seq)
            await bounce(page)

    async def expire_overdue(self) -> None:
        """Fail (with an NDR) every waiting message past its lifetime, a page at a time
        (an expired message leaves the overdue ones; ``seen`` guards against one that
        does not)."""
        seen: set[bytes] = set()
        now = time.time()
        while page := [e for e in await self.store.overdue_entries(now) if e.entry_id not in seen]:
            for entry in page:
                seen.add(entry.entry_id)
                await self.spooler.outbound.settler.expire(
                    entry.entry_id, entry.last_error or "not sent in time"
                )
        await self.spooler.outbound.settler.warn_delayed()

    async def offer_many(
        self,
        handle: LogonHandle,
        claims: Sequence[Claim],
        keep_going: Callable[[], bool],
    ) -> list[tuple[QueueEntry, Offered]]:
        """Offer claimed messages to ``handle`` in order; those left when ``keep_going()``
        turns false are released (back where they were claimed from).

        The transport gets at most ``max_in_flight`` submit/end pairs at once (its
        ``submit_slot``), taken in claim order. Recording an attempt's outcome runs
        outside the slot, so the next message goes to the transport while the previous
        one's outcome is being written: up to ``RECORDS_AHEAD`` offers more than the
        transport's slots may be under way, and their records meet in one group commit
        of the store even at one connection. Returns only once every offer, its record
        included, has ended: a flush or a shutdown that waits for this waits for every
        outcome to be committed."""
        results: list[tuple[QueueEntry, Offered]] = []
        offered: set[bytes] = set()
        try:
            window = asyncio.Semaphore(handle.max_in_flight + RECORDS_AHEAD)

            async def one(claim: Claim) -> None:
                try:
                    result = await self._offer(handle, claim, keep_going)
                    if result is None:  # stopped before its turn came: released below
                        offered.discard(claim.entry_id)
                    else:
                        results.append((claim.entry, result))
                finally:
                    window.release()

            async with asyncio.TaskGroup() as group:
                for claim in claims:
                    await window.acquire()
                    if not keep_going():
                        window.release()
                        break
                    offered.add(claim.entry_id)
                    group.create_task(one(claim))
            return results
        finally:
            left = [c for c in claims if c.entry_id not in offered]
            if left:
                await self._release(left)

    async def _release(self, claims: Sequence[Claim]) -> None:
        """Give claims back that were not offered."""
        try:
            await self.store.release(claims)
        finally:
            for claim in claims:
                busy = self.busy.pop(claim.entry_id, None)
                if busy is not None:
                    busy[1].set()

    async def _offer(
        self, handle: LogonHandle, claim: Claim, keep_going: Callable[[], bool]
    ) -> Offered | None:
        """Offer one claimed message (``busy`` until the offer ends); None when
        ``keep_going()`` turned false before the transport's turn came (not offered)."""
        entry_id = claim.entry_id
        try:
            return await self.spooler.outbound.offer(handle, claim, keep_going)
        except BaseException as exc:
            # Not a transport's failure (the runner handles those): the store or the
            # spooler failed, or shutdown cancelled the call; the message may be left
            # in_flight.
            self.stranded = True
            if isinstance(exc, Exception):
                self.failed[entry_id] = str(exc) or type(exc).__name__
            raise
        finally:
            busy = self.busy.pop(entry_id, None)
            if busy is not None:
                busy[1].set()

    async def repair_stranded(self, *, force: bool = False) -> None:
        """Put messages that an error left in_flight back in the queue (or mark them
        uncertain if their hand-over had begun), as a restart would, and finish those
        whose recipients are all done. Call only while nothing is being offered (holding
        ``activity``, or at shutdown); ``force`` repairs even without a known error."""
        outbound = self.spooler.outbound
        if not (self.stranded or outbound.stranded or force) or self.busy:
            return
        repaired = await self.store.recover(parked=False)
        if any(repaired.values()):
            log.warning("put messages left in flight by an error back: %s", repaired)
        await self.spooler.outbound.settler.settle_leftovers()
        # Only now: a failure above is tried again next time.
        self.stranded = outbound.stranded = False
        for entry_id, error in list(self.failed.items()):
            try:
                entry = await self.store.queue_entry(entry_id, with_recipients=False)
            except MapiError as exc:
                if exc.hresult != MAPI_E_NOT_FOUND:
                    raise
                del self.failed[entry_id]  # purged meanwhile
                continue
            if not entry.state.finished:
                wait = self.spooler.retry_policy.delay(entry.attempts)
                self.held_back[entry_id] = time.time() + wait
                await self.store.record_one(
                    Outcome(entry_id, notes=[Note("spooler-error", detail=error)])
                )
                log.warning(
                    "message %s failed in the spooler (%s); trying it again in %.0f s",
                    entry_id.hex(),
                    error,
                    wait,
                )
            del self.failed[entry_id]
