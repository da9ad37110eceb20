"""Choosing and offering messages: which queued messages a transport gets now, offering
them (up to ``max_in_flight`` at once), bouncing recipients no transport accepts, and
putting back in the queue what an error left in flight."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..mapi import MAPI_E_NOT_FOUND, MapiError
from ..store import QueueEntry, QueueState, Store
from .outbound import Offered, Outcome
from .routing import Registration, route
from .sender_routing import SenderRoutes

if TYPE_CHECKING:
    from .engine import Spooler
    from .logons import LogonHandle

log = logging.getLogger("mapispool.spooler")


class Offering:
    """The spooler's queue work; one per spooler."""

    def __init__(self, spooler: Spooler) -> None:
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
        #: Routing by envelope sender (``senders`` in transport sections).
        self.sender_routes = SenderRoutes(
            spooler.profile.transports, lambda entry_id: spooler.store.load_outbound(entry_id)[0]
        )

    @property
    def store(self) -> Store:
        return self.spooler.store

    def work_for(
        self,
        handle: LogonHandle,
        *,
        force: bool,
        exclude: set[bytes],
        submitted_before: float | None = None,
    ) -> list[QueueEntry]:
        """Messages to offer ``handle`` now, in submit order: the deferred ones it released,
        then every due message with a pending recipient that routing gives to it, submitted
        before ``submitted_before`` if given (a flush serves the queue as it found it, so
        that a steady stream of new mail cannot keep it from ever ending)."""
        self.expire_overdue()
        now = time.time()
        for entry_id, until in list(self.held_back.items()):
            if until <= now:
                del self.held_back[entry_id]
        if not force:
            exclude = exclude | self.held_back.keys()
        work: list[QueueEntry] = []
        for entry in self.store.parked_entries(handle.name):
            if entry.entry_id not in exclude and entry.entry_id in handle.released:
                work.append(entry)
        registrations = self.spooler.registrations()
        after: tuple[float, int] | None = None
        while True:
            page = self.store.due_entries(now, ignore_backoff=force, after=after)
            if not page:
                break
            after = (page[-1].submit_time, page[-1].seq)
            if submitted_before is not None and page[-1].submit_time > submitted_before:
                page = [e for e in page if e.submit_time <= submitted_before]
                after = None  # pages are in submit order: nothing later qualifies
            if not page:
                break
            types = self.store.pending_types([e.seq for e in page])
            for entry in page:
                if entry.entry_id in exclude:
                    continue
                regs = self.sender_routes.for_message(registrations, entry.entry_id)
                if any(route(t, regs, entry.declined) == handle.name for t in types[entry.seq]):
                    work.append(entry)
            if after is None:
                break
        work.extend(self._busy_elsewhere(handle, exclude, submitted_before, registrations))
        return work

    def _busy_elsewhere(
        self,
        handle: LogonHandle,
        exclude: set[bytes],
        submitted_before: float | None,
        registrations: list[Registration],
    ) -> list[QueueEntry]:
        """Messages another transport is sending right now (a parallel flush) that still
        have recipients for ``handle``: the store shows them in_flight, not due, yet they
        are ``handle``'s work too; offering one waits until the other transport is done."""
        if not self.busy:
            return []
        entries = []
        for entry_id, (name, _done) in list(self.busy.items()):
            if name == handle.name or entry_id in exclude:
                continue
            entry = self.store.queue_entry(entry_id, with_recipients=False)
            if submitted_before is None or entry.submit_time <= submitted_before:
                entries.append(entry)
        types = self.store.pending_types([e.seq for e in entries])
        return [
            e
            for e in entries
            if any(
                route(t, self.sender_routes.for_message(registrations, e.entry_id), e.declined)
                == handle.name
                for t in types[e.seq]
            )
        ]

    def bounce_unroutable(self) -> None:
        """Give every waiting message whose pending recipients include one that no
        logged-on transport accepts its NDR for that recipient now (issue #9 rule 8), not
        only at the end of its lifetime. Nothing bounces while a transport is not logged
        on (it failed to, or sent NOTIFY_CRITICAL_ERROR): it might take the recipient."""
        if not self.spooler.all_logged_on():
            return
        registrations = self.spooler.registrations()

        def bounce(entries: list[QueueEntry]) -> None:
            types = self.store.pending_types([e.seq for e in entries])
            for entry in entries:
                if any(route(t, registrations, entry.declined) is None for t in types[entry.seq]):
                    self.spooler.outbound.settle(entry.entry_id)

        for handle in self.spooler.handles:
            bounce(self.store.parked_entries(handle.name))
        # Page by page, so that memory does not grow with the queue.
        after: tuple[float, int] | None = None
        while True:
            page = self.store.due_entries(time.time(), ignore_backoff=True, after=after)
            if not page:
                break
            after = (page[-1].submit_time, page[-1].seq)
            bounce(page)

    def expire_overdue(self) -> None:
        """Fail (with an NDR) every waiting message past its lifetime."""
        for entry in self.store.overdue_entries(time.time()):
            self.spooler.outbound.expire(entry.entry_id, entry.last_error or "not sent in time")
        self.spooler.outbound.warn_delayed()

    async def offer_many(
        self,
        handle: LogonHandle,
        entries: Sequence[QueueEntry],
        keep_going: Callable[[], bool],
    ) -> list[tuple[QueueEntry, Offered]]:
        """Offer ``entries`` to ``handle`` in order, up to ``max_in_flight`` at once."""
        results: list[tuple[QueueEntry, Offered]] = []
        if handle.max_in_flight <= 1:
            for entry in entries:
                if not keep_going():
                    break
                results.append((entry, await self._offer_fresh(handle, entry)))
            return results
        slots = asyncio.Semaphore(handle.max_in_flight)

        async def one(entry: QueueEntry) -> None:
            async with slots:
                if keep_going():
                    results.append((entry, await self._offer_fresh(handle, entry)))

        async with asyncio.TaskGroup() as group:
            for entry in entries:
                await slots.acquire()
                slots.release()
                if not keep_going():
                    break
                group.create_task(one(entry))
        return results

    async def _offer_fresh(self, handle: LogonHandle, entry: QueueEntry) -> Offered:
        """Offer an entry after re-reading it (it may have been cancelled meanwhile, or
        another transport may be sending its other recipients: then wait for that)."""
        entry_id = entry.entry_id
        while (busy := self.busy.get(entry_id)) is not None:
            await busy[1].wait()
        current = self.store.queue_entry(entry_id, with_recipients=False)
        if current.state is QueueState.PARKED:
            handle.released.discard(entry_id)
        elif current.state not in (QueueState.QUEUED, QueueState.DEFERRED, QueueState.RETRY):
            return Offered(Outcome.NOTHING)
        done = asyncio.Event()
        self.busy[entry_id] = (handle.name, done)
        try:
            return await self.spooler.outbound.offer(handle, current)
        except BaseException as exc:
            # Not a transport's failure (the runner handles those): the store or the
            # spooler failed, or shutdown cancelled the call; the message may be left
            # in_flight.
            self.stranded = True
            if isinstance(exc, Exception):
                self.failed[entry_id] = str(exc) or type(exc).__name__
            raise
        finally:
            del self.busy[entry_id]
            done.set()

    def repair_stranded(self, *, force: bool = False) -> None:
        """Put messages that an error left in_flight back in the queue (or mark them
        uncertain if their hand-over had begun), as a restart would, and finish those
        whose recipients are all done. Call only while nothing is being offered (holding
        ``activity``, or at shutdown); ``force`` repairs even without a known error."""
        if not (self.stranded or force) or self.busy:
            return
        repaired = self.store.recover(parked=False)
        if any(repaired.values()):
            log.warning("put messages left in flight by an error back: %s", repaired)
        self.spooler.outbound.settle_leftovers()
        self.stranded = False  # only now: a failure above is tried again next time
        for entry_id, error in list(self.failed.items()):
            try:
                entry = self.store.queue_entry(entry_id, with_recipients=False)
            except MapiError as exc:
                if exc.hresult != MAPI_E_NOT_FOUND:
                    raise
                del self.failed[entry_id]  # purged meanwhile
                continue
            if not entry.state.finished:
                wait = self.spooler.retry_policy.delay(entry.attempts)
                self.held_back[entry_id] = time.time() + wait
                self.store.log_event(entry_id, "spooler-error", detail=error)
                log.warning(
                    "message %s failed in the spooler (%s); trying it again in %.0f s",
                    entry_id.hex(),
                    error,
                    wait,
                )
            del self.failed[entry_id]
