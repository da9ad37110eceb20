"""The flush protocol (DESIGN §6, the 14 steps of seeds/implementing-flushqueues.md):
``FlushCoordinator`` drives one Send/Receive over the transports in transport order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Protocol

from ..mapi import (
    FLUSH_ASYNC_OK,
    FLUSH_DOWNLOAD,
    FLUSH_FORCE,
    FLUSH_UPLOAD,
    MAPI_E_BUSY,
    NOTIFY_END_INBOUND_FLUSH,
    NOTIFY_END_OUTBOUND_FLUSH,
    PR_STATUS_STRING,
    STATUS_FAILURE,
    STATUS_INBOUND_FLUSH,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_FLUSH,
    MapiError,
)
from ..profile import Profile
from ..store import Store
from .attempts import Result
from .handles import LogonHandle
from .inbound import InboundRunner
from .offering import Offering
from .pages import OfferedInFlush
from .status import StatusTable

log = logging.getLogger("mapispool.flush")

#: Seconds between two looks at the store's flush lock while waiting for another worker.
STORE_LOCK_WAIT = 0.25


@dataclass
class TransportFlushResult:
    """What one transport did during a flush."""

    transport: str
    sent: int = 0
    received: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0
    uncertain: int = 0
    bytes_sent: int = 0
    skipped: str | None = None
    error: str | None = None
    #: Why the transport is offline at the end of its turn (the server is unreachable or
    #: busy): its messages wait for a retry. Not a failure; shown so it is not silent.
    offline: str | None = None

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class FlushResult:
    """The result of one Send/Receive: per transport, in transport order."""

    flags: int
    transports: dict[str, TransportFlushResult] = field(default_factory=dict)
    interrupted: bool = False
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def total(self, name: str) -> int:
        """The sum of one counter (``"sent"``, ``"received"``, …) over every transport."""
        return sum(int(getattr(t, name)) for t in self.transports.values())

    @property
    def ok(self) -> bool:
        """True when nothing failed, became uncertain or hit an error."""
        return (
            not any(t.failed or t.uncertain or t.error for t in self.transports.values())
            and not self.interrupted
        )


@dataclass(frozen=True)
class FlushProgress:
    """A progress event: ``phase`` is ``"outbound"``, ``"inbound"`` or ``"done"``; ``done`` and
    ``total`` count messages (``total`` is None when unknown, as for inbound)."""

    transport: str
    phase: str
    done: int
    total: int | None
    bytes_done: int = 0
    bytes_total: int | None = None


ProgressCallback = Callable[[FlushProgress], None]


class FlushHost(Protocol):
    """What the flush coordinator needs from the spooler."""

    shutting_down: bool
    profile: Profile
    store: Store
    status: StatusTable
    offering: Offering
    inbound: InboundRunner

    async def end_flush_for_shutdown(self, handle: LogonHandle) -> None: ...

    async def persist_status(self) -> None: ...

    async def revive(self, handle: LogonHandle, *, force: bool = False) -> bool: ...

    def row_changed(self, handle: LogonHandle, *, requested: bool = False) -> None: ...

    def set_spooler_flushing(self, flags: int) -> None: ...


class FlushCoordinator:
    """Runs flushes for one spooler; at most one at a time (MAPI_E_BUSY otherwise)."""

    def __init__(self, spooler: FlushHost) -> None:
        self.spooler = spooler
        self.lock = asyncio.Lock()
        self._resource_locks: dict[str, asyncio.Lock] = {}
        self.current: FlushResult | None = None
        #: Per transport, the bookkeeping of its latest outbound phase (its counts).
        self.offers: dict[str, OfferedInFlush] = {}

    async def acquire(self, *, wait: bool) -> None:
        """Take the right to flush: this spooler's lock, then the store's (one FlushQueues
        per store, across every worker that shares it). A flush of another worker gives
        MAPI_E_BUSY, or is waited for when ``wait``."""
        await self.lock.acquire()
        try:
            while not await self.spooler.store.try_flush_lock():
                if not wait or self.spooler.shutting_down:
                    raise MapiError(
                        MAPI_E_BUSY,
                        "a Send/Receive is already running on another worker of "
                        f"{self.spooler.store.location}; wait for it to finish",
                    )
                await asyncio.sleep(STORE_LOCK_WAIT)
        except BaseException:
            self.lock.release()
            raise

    async def release(self) -> None:
        """Give back what ``acquire`` took (with the database away, its session ends and
        the store's lock with it)."""
        try:
            with suppress(MapiError):
                await self.spooler.store.try_flush_unlock()
        finally:
            self.lock.release()

    @asynccontextmanager
    async def resources(self, handle: LogonHandle) -> AsyncIterator[None]:
        """Hold the transport's external resources (sorted, so two flushes never deadlock)."""
        names = sorted(handle.logon.resources) if handle.logon else []
        async with AsyncExitStack() as stack:
            for name in names:
                lock = self._resource_locks.setdefault(name, asyncio.Lock())
                await stack.enter_async_context(lock)
            yield

    async def run(
        self,
        targets: Sequence[LogonHandle],
        flags: int,
        progress: ProgressCallback | None,
    ) -> FlushResult:
        """One flush over ``targets`` (the caller holds ``self.lock``)."""
        spooler = self.spooler
        result = FlushResult(flags=flags)
        self.current = result
        for handle in targets:
            result.transports[handle.name] = TransportFlushResult(handle.name)
        spooler.set_spooler_flushing(flags)
        try:
            if flags & FLUSH_UPLOAD:
                # Recipients no transport accepts bounce at every Send/Receive that sends.
                await spooler.offering.bounce_unroutable()
            if spooler.profile.parallel_flush:
                await _all(self.flush_one(h, flags, result, progress) for h in targets)
            else:
                await self._in_transport_order(targets, flags, result, progress)
        finally:
            result.interrupted = spooler.shutting_down
            result.finished = time.time()
            spooler.set_spooler_flushing(0)
            self.current = None
            await spooler.persist_status()
        return result

    async def _in_transport_order(
        self,
        targets: Sequence[LogonHandle],
        flags: int,
        result: FlushResult,
        progress: ProgressCallback | None,
    ) -> None:
        """The transports that send take their turns one after another, in transport
        order; those that only receive (no address type: the queue never goes to them)
        take theirs meanwhile, each on its own. Which transport is offered a message first
        is what the order means, and only the senders are offered messages, so checking
        the receivers at the same time changes no outcome; it only stops one slow mail
        server from holding up the others (an empty Send/Receive costs the slowest check,
        not the sum of them)."""
        spooler = self.spooler
        receivers = [h for h in targets if h.logged_on and not h.address_types]
        senders = [h for h in targets if h not in receivers]
        # The senders run in this task, as they always did (a store may keep per-task
        # state, such as the connection that holds the flush lock); only the receivers
        # get tasks of their own.
        checks = [
            asyncio.ensure_future(self.flush_one(h, flags, result, progress)) for h in receivers
        ]
        try:
            for handle in senders:
                if spooler.shutting_down:
                    break
                await self.flush_one(handle, flags, result, progress)
        finally:
            await _all(checks)

    async def flush_one(
        self,
        handle: LogonHandle,
        flags: int,
        result: FlushResult,
        progress: ProgressCallback | None,
    ) -> None:
        """Steps 1 to 13 for one transport."""
        spooler = self.spooler
        mine = result.transports.setdefault(handle.name, TransportFlushResult(handle.name))
        if not handle.logged_on:
            why = handle.logon_error or ("NOTIFY_CRITICAL_ERROR" if handle.critical else "")
            mine.skipped = "not logged on" + (f": {why}" if why else "")
            return
        if not flags & FLUSH_FORCE and not await spooler.revive(handle, force=True):
            mine.skipped = "offline"
            return
        # Its turn: requests made before it are served by it; one made during or after
        # it is served when this flush ends (Spooler.row_changed).
        handle.in_flush = True
        handle.flush_requested = False
        handle.request_flags = 0
        try:
            await self._turn(handle, flags, mine, progress)
            self._note_state(handle, mine)
        finally:
            handle.in_flush = False
            if handle.requested_in_turn:
                handle.requested_in_turn = False
                spooler.row_changed(handle, requested=True)

    def _note_state(self, handle: LogonHandle, mine: TransportFlushResult) -> None:
        """A transport that ends its turn failed (wrong credentials, a TLS problem) makes
        the flush fail with its status string as the error; one that ends offline (the
        server is down) has the reason noted. Either way a flush never looks fine while
        the messages it could not send only went to the retry schedule (issue #13)."""
        code = self.spooler.status.code(handle.name)
        text = str(self.spooler.status.row(handle.name).get(PR_STATUS_STRING) or "")
        if code & STATUS_FAILURE and not mine.error:
            mine.error = text or "the transport failed"
        elif code & STATUS_OFFLINE:
            mine.offline = text or "offline"

    async def _turn(
        self,
        handle: LogonHandle,
        flags: int,
        mine: TransportFlushResult,
        progress: ProgressCallback | None,
    ) -> None:
        spooler = self.spooler
        async with self.resources(handle):
            # Step 1: FlushQueues once, with every flag of the request.
            await handle.call(lambda logon: logon.flush_queues(flags & ~FLUSH_ASYNC_OK))
            try:
                ended = await self._phases(handle, flags, mine, progress)
            except Exception:
                # A store error (a full disk) ends the flush here: the transport still
                # hears that it ended, so no FLUSH bit stays set and it frees what it took.
                with suppress(Exception):
                    await spooler.end_flush_for_shutdown(handle)
                raise
            if not ended:
                return
        if progress is not None:
            progress(FlushProgress(handle.name, "done", mine.sent + mine.received, None))

    async def _phases(
        self,
        handle: LogonHandle,
        flags: int,
        mine: TransportFlushResult,
        progress: ProgressCallback | None,
    ) -> bool:
        """Steps 3 to 13 after ``flush_queues``; False when shutdown cut them short."""
        spooler = self.spooler
        # Steps 3-7: SubmitMessage/EndMessage while STATUS_OUTBOUND_FLUSH stays set.
        if not spooler.shutting_down:
            await self.outbound_phase(handle, flags, mine, progress)
        if spooler.shutting_down:
            await spooler.end_flush_for_shutdown(handle)
            return False
        # Step 8: the end of the outbound part, always: a transport that sets
        # STATUS_INBOUND_FLUSH only now (step 9) is waiting for it.
        await handle.call(lambda logon: logon.transport_notify(NOTIFY_END_OUTBOUND_FLUSH))
        # Steps 10-12: StartMessage while STATUS_INBOUND_FLUSH stays set.
        if flags & FLUSH_DOWNLOAD or spooler.status.code(handle.name) & STATUS_INBOUND_FLUSH:
            await self.inbound_phase(handle, mine, progress)
        if spooler.shutting_down:
            await spooler.end_flush_for_shutdown(handle)
            return False
        # Step 12-13: the end of the inbound part; the transport clears its bit.
        await handle.call(lambda logon: logon.transport_notify(NOTIFY_END_INBOUND_FLUSH))
        return True
        if progress is not None:
            progress(FlushProgress(handle.name, "done", mine.sent + mine.received, None))

    def _outbound_wanted(self, handle: LogonHandle) -> bool:
        spooler = self.spooler
        return bool(spooler.status.code(handle.name) & STATUS_OUTBOUND_FLUSH) and not (
            spooler.shutting_down or handle.critical
        )

    async def outbound_phase(
        self,
        handle: LogonHandle,
        flags: int,
        mine: TransportFlushResult,
        progress: ProgressCallback | None,
    ) -> None:
        """Offer every due message routed to ``handle``, each at most once per flush."""
        if not self._outbound_wanted(handle):
            return
        force = bool(flags & FLUSH_FORCE)
        offered = self.offers[handle.name] = OfferedInFlush()
        try:
            await self._offer_all(handle, offered, force, mine, progress)
        finally:
            offered.close()

    async def _offer_all(
        self,
        handle: LogonHandle,
        offered: OfferedInFlush,
        force: bool,
        mine: TransportFlushResult,
        progress: ProgressCallback | None,
    ) -> None:
        """``outbound_phase``'s loop: claim a page, offer it, note the outcomes."""
        spooler = self.spooler
        until = time.time()
        offering = spooler.offering
        total = bytes_total = done = bytes_done = 0
        started = False
        while self._outbound_wanted(handle):
            # A page at a time: memory stays flat however long the queue is. On a store
            # that many workers share, each page in one of the transport's lanes.
            async with offering.lane(
                handle.name, handle.config.lanes, wait=lambda: self._outbound_wanted(handle)
            ) as held:
                if not held:
                    break
                claims = await offering.claim_work(
                    handle, force=force, exclude=offered, submitted_before=until, first=not started
                )
                if claims:
                    total += len(claims)
                    bytes_total += sum(c.entry.size for c in claims)
                    if progress is not None and not started:
                        progress(FlushProgress(handle.name, "outbound", 0, total, 0, bytes_total))
                    started = True
                    outcomes = await offering.offer_many(
                        handle, claims, keep_going=lambda: self._outbound_wanted(handle)
                    )
            if not claims:
                if await offering.wait_for_others(handle, offered, until):
                    continue
                break
            for entry, offered_result in outcomes:
                offered.add(entry.entry_id, finished=offered_result.finished)
                count_outcome(
                    mine, offered_result.outcome, offered_result.failed, offered_result.handled
                )
                if offered_result.outcome is Result.SENT:
                    mine.bytes_sent += offered_result.size
                done += 1
                bytes_done += entry.size
                if progress is not None:
                    progress(
                        FlushProgress(handle.name, "outbound", done, max(total, done),
                                      bytes_done, bytes_total)
                    )  # fmt: skip
        if progress is not None and not started:
            progress(FlushProgress(handle.name, "outbound", 0, 0, 0, 0))

    async def inbound_phase(
        self, handle: LogonHandle, mine: TransportFlushResult, progress: ProgressCallback | None
    ) -> None:
        """StartMessage until the transport clears STATUS_INBOUND_FLUSH or saves nothing."""
        spooler = self.spooler
        if progress is not None:
            progress(FlushProgress(handle.name, "inbound", 0, None))

        def keep_going() -> bool:
            return bool(spooler.status.code(handle.name) & STATUS_INBOUND_FLUSH) and not (
                spooler.shutting_down or handle.critical
            )

        counter = [0]

        def on_message(_message: object) -> None:
            counter[0] += 1
            if progress is not None:
                progress(FlushProgress(handle.name, "inbound", counter[0], None))

        received, error = await spooler.inbound.run(handle, keep_going, on_message)
        mine.received += received
        if error:
            mine.error = error


async def _all(work: Iterable[Awaitable[None]]) -> None:
    """Run ``work`` concurrently to the end of every part; then raise the first error, if
    any (a part that fails does not leave the others running unattended)."""
    outcomes = await asyncio.gather(*work, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def count_outcome(
    result: TransportFlushResult, outcome: Result, failed: int, handled: int = 0
) -> None:
    """Add one offer's outcome to a transport's flush result. A message some of whose
    ``handled`` recipients were reported ``failed`` counts as failed; as sent too only
    when another one of them was delivered (a message every recipient refused is not
    sent, issue #13)."""
    if outcome is Result.SENT:
        if not failed or failed < handled:
            result.sent += 1
        if failed:
            result.failed += 1
    elif outcome is Result.PARKED:
        result.deferred += 1
    elif outcome is Result.RETRY:
        result.retried += 1
    elif outcome is Result.UNCERTAIN:
        result.uncertain += 1
    elif outcome in (Result.FAILED, Result.CANCELLED):
        result.failed += 1
    if failed and outcome not in (Result.FAILED, Result.SENT):
        result.failed += 1
