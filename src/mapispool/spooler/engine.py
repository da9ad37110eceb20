"""The spooler: logs transports on, sends queued mail, polls for new mail, runs flushes,
keeps the status table, and shuts down without losing anything (DESIGN §2, §6, §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..mapi import (
    FLUSH_ASYNC_OK,
    FLUSH_DOWNLOAD,
    FLUSH_FORCE,
    FLUSH_NO_UI,
    FLUSH_UPLOAD,
    LOGOFF_NORMAL,
    LOGON_NO_DIALOG,
    LOGON_NO_INBOUND,
    LOGON_NO_OUTBOUND,
    MAPI_E_BUSY,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_SUPPORT,
    MAPI_E_NOT_FOUND,
    MAPI_E_UNKNOWN_FLAGS,
    MAPI_SPOOLER,
    MAPI_TRANSPORT_PROVIDER,
    NOTIFY_ABORT_DEFERRED,
    NOTIFY_BEGIN_INBOUND,
    NOTIFY_BEGIN_OUTBOUND,
    NOTIFY_CONFIG_CHANGE,
    NOTIFY_CRITICAL_ERROR,
    NOTIFY_END_INBOUND,
    NOTIFY_END_INBOUND_FLUSH,
    NOTIFY_END_OUTBOUND,
    NOTIFY_END_OUTBOUND_FLUSH,
    NOTIFY_NEWMAIL,
    NOTIFY_READYTOSEND,
    NOTIFY_SENTDEFERRED,
    PR_RESOURCE_METHODS,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_FLUSH_QUEUES,
    STATUS_INBOUND_ENABLED,
    STATUS_INBOUND_FLUSH,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_ENABLED,
    STATUS_OUTBOUND_FLUSH,
    STATUS_VALIDATE_STATE,
    STATUSROW_UPDATE,
    MapiError,
)
from ..profile import Profile
from ..spi import InboundMessage, flush_bits_for, flush_flags_for
from ..store import QueueEntry, QueueState, Store
from .flush import FlushCoordinator, FlushResult, ProgressCallback
from .inbound import InboundRunner
from .logons import LogonHandle, SpoolerSupport
from .outbound import Offered, OutboundRunner, Outcome
from .retry import RetryPolicy
from .routing import Registration, route
from .status import SPOOLER_ROW, StatusTable
from .supervision import Supervisor

log = logging.getLogger("mapispool.spooler")

VALID_FLUSH_FLAGS = FLUSH_UPLOAD | FLUSH_DOWNLOAD | FLUSH_FORCE | FLUSH_NO_UI | FLUSH_ASYNC_OK
#: Seconds between two attempts to bring an OFFLINE transport back outside a flush.
REVIVE_INTERVAL = 30.0
#: How long shutdown waits for a transport call in progress before giving up on it.
SHUTDOWN_GRACE = 30.0


@dataclass
class FlushTicket:
    """A flush started with FLUSH_ASYNC_OK: its task and, once done, its result."""

    task: asyncio.Task[FlushResult]


class Spooler:
    """One spooler per store. Create with ``Spooler(profile, store)``, then ``await start()``."""

    def __init__(self, profile: Profile, store: Store) -> None:
        self.profile = profile
        self.store = store
        self.status = StatusTable()
        self.retry_policy = RetryPolicy(profile.retry)
        self.outbound = OutboundRunner(self)
        self.inbound = InboundRunner(self)
        self.flusher = FlushCoordinator(self)
        self.handles = [LogonHandle(config) for config in profile.transports]
        self.shutting_down = False
        self.activity = asyncio.Lock()
        self._wake = asyncio.Event()
        self._requests = asyncio.Event()
        self.supervisor = Supervisor(self._refresh_spooler_row)
        self._flush_waiting = 0
        self._flushing_flags = 0
        #: Messages being offered right now: entry id -> (transport, set when done).
        self._offering: dict[bytes, tuple[str, asyncio.Event]] = {}
        #: An offer ended in an error of the spooler's own (the store failed): its message
        #: may be left in_flight with nobody sending it, to be put back in the queue.
        self._stranded = False
        self._newmail_listeners: list[Callable[[InboundMessage], None]] = []
        self.recovered: dict[str, int] = {}

    # -- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        """Take the store's spooler lock, repair what a killed spooler left, log every
        transport on in transport order, and start the background work."""
        if not self.store.acquire_spooler_lock():
            raise MapiError(
                MAPI_E_BUSY,
                f"another spooler is already running on {self.store.path}; "
                "talk to it (mapispool commands do) or stop it first",
            )
        self.recovered = self.store.recover()
        self.status.add_row(
            SPOOLER_ROW,
            display_name="Spooler",
            provider_display="mapispool",
            resource_type=MAPI_SPOOLER,
            resource_methods=STATUS_VALIDATE_STATE | STATUS_FLUSH_QUEUES,
        )
        for handle in self.handles:
            await self._logon(handle)
        self.outbound.settle_leftovers()
        self.persist_status()
        start = self.supervisor.start
        start("flush-requests", "Serving flush requests", self._serve_requests)
        start("status-persist", "Saving the status table", self._persist_loop)
        if self.profile.send_immediately:
            start("sender", "Background sending", self._sender_loop)
        for handle in self.handles:
            if handle.polls:
                start(
                    f"poll-{handle.name}",
                    f"Polling {handle.name}",
                    lambda h=handle: self._poll_loop(h),  # type: ignore[misc]
                )

    async def _logon(self, handle: LogonHandle) -> None:
        config = handle.config
        self.status.add_row(
            handle.name,
            display_name=handle.name,
            provider_display=config.provider,
            resource_type=MAPI_TRANSPORT_PROVIDER,
            resource_methods=STATUS_VALIDATE_STATE | STATUS_FLUSH_QUEUES,
            status_code=STATUS_AVAILABLE,
        )
        support = SpoolerSupport(self, handle)
        try:
            provider = config.provider_class(handle.name, config.settings)
            logon = await provider.transport_logon(
                support, LOGON_NO_DIALOG | LOGON_NO_INBOUND | LOGON_NO_OUTBOUND
            )
            handle.attach(provider, logon)
            self.status.modify(
                handle.name, {PR_RESOURCE_METHODS: int(logon.resource_methods)}, STATUSROW_UPDATE
            )
            handle.address_types = tuple(logon.address_types())
            # A row claims only the directions the transport has (issue #9 rule 12).
            begin = NOTIFY_BEGIN_OUTBOUND if handle.address_types else 0
            if logon.receives:
                begin |= NOTIFY_BEGIN_INBOUND
            handle.begun = begin
            if begin:
                await handle.call(lambda lg: lg.transport_notify(begin))
        except Exception as exc:
            handle.logon_error = str(exc) or type(exc).__name__
            log.error("transport %s failed to log on: %s", handle.name, handle.logon_error)
            self.status.modify(
                handle.name,
                {
                    PR_STATUS_CODE: STATUS_FAILURE,
                    PR_STATUS_STRING: f"Logon failed: {handle.logon_error}",
                },
                STATUSROW_UPDATE,
            )

    async def shutdown(self) -> None:
        """Stop: a flush in progress ends after its current call with one
        ``transport_notify(NOTIFY_END_INBOUND_FLUSH | NOTIFY_END_OUTBOUND_FLUSH)``; parked
        messages are handed back (NOTIFY_ABORT_DEFERRED); every transport is logged off."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self._wake.set()
        self._requests.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.activity.acquire(), SHUTDOWN_GRACE)
        for task in self.supervisor.tasks:
            task.cancel()
        for task in self.supervisor.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for handle in self.handles:
            await self._logoff(handle)
        try:
            # Nothing is being sent any more: a message left in_flight by an error goes
            # back to the queue now, not only at the next start.
            self.repair_stranded(force=True)
        except Exception:
            log.exception("could not put messages left in flight back in the queue")
        self.persist_status()
        self.store.release_spooler_lock()

    async def _logoff(self, handle: LogonHandle) -> None:
        if handle.logon is None:
            return
        try:
            for entry in self.store.parked_entries(handle.name):
                await handle.call(
                    lambda lg, e=entry: lg.transport_notify(NOTIFY_ABORT_DEFERRED, e.entry_id)  # type: ignore[misc]
                )
                self.store.transition(entry.entry_id, QueueState.QUEUED, event="unparked",
                                      transport=handle.name)  # fmt: skip
            end = NOTIFY_END_INBOUND if handle.begun & NOTIFY_BEGIN_INBOUND else 0
            if handle.begun & NOTIFY_BEGIN_OUTBOUND:
                end |= NOTIFY_END_OUTBOUND
            if end:
                await handle.call(lambda lg: lg.transport_notify(end))
            await handle.call(lambda lg: lg.logoff(LOGOFF_NORMAL))
        except Exception:  # logoff always counts, whatever the transport says
            log.exception("transport %s failed while logging off", handle.name)
        finally:
            handle.logon = None
            if handle.provider is not None:
                with contextlib.suppress(Exception):
                    await handle.provider.shutdown()

    async def end_flush_for_shutdown(self, handle: LogonHandle) -> None:
        """Shutdown in the middle of a flush: one combined end notification (DESIGN §6.7)."""
        await handle.call(
            lambda lg: lg.transport_notify(NOTIFY_END_INBOUND_FLUSH | NOTIFY_END_OUTBOUND_FLUSH)
        )

    # -- queries the runners use ----------------------------------------------------

    def registrations(self) -> list[Registration]:
        """(name, address types) of the logged-on transports, in transport order."""
        return [(h.name, h.address_types) for h in self.handles if h.logged_on]

    def all_logged_on(self) -> bool:
        """True unless some transport failed to log on or sent NOTIFY_CRITICAL_ERROR (then
        unroutable mail waits instead of bouncing: the missing transport might take it)."""
        return all(h.logged_on for h in self.handles)

    def handle_named(self, name: str) -> LogonHandle:
        for handle in self.handles:
            if handle.name == name:
                return handle
        raise MapiError(MAPI_E_NOT_FOUND, f"no transport called {name!r}")

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
        work: list[QueueEntry] = []
        for entry in self.store.parked_entries(handle.name):
            if entry.entry_id not in exclude and (
                handle.release_all or entry.entry_id in handle.released
            ):
                work.append(entry)
        registrations = self.registrations()
        after: tuple[float, int] | None = None
        now = time.time()
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
                if any(
                    route(t, registrations, entry.declined) == handle.name for t in types[entry.seq]
                ):
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
        if not self._offering:
            return []
        entries = []
        for entry_id, (name, _done) in list(self._offering.items()):
            if name == handle.name or entry_id in exclude:
                continue
            entry = self.store.queue_entry(entry_id, with_recipients=False)
            if submitted_before is None or entry.submit_time <= submitted_before:
                entries.append(entry)
        types = self.store.pending_types([e.seq for e in entries])
        return [
            e
            for e in entries
            if any(route(t, registrations, e.declined) == handle.name for t in types[e.seq])
        ]

    def bounce_unroutable(self) -> None:
        """Give every waiting message whose pending recipients include one that no
        logged-on transport accepts its NDR for that recipient now (issue #9 rule 8), not
        only at the end of its lifetime. Nothing bounces while a transport is not logged
        on (it failed to, or sent NOTIFY_CRITICAL_ERROR): it might take the recipient."""
        if not self.all_logged_on():
            return
        registrations = self.registrations()
        waiting: list[QueueEntry] = []
        for handle in self.handles:
            waiting.extend(self.store.parked_entries(handle.name))
        after: tuple[float, int] | None = None
        while True:
            page = self.store.due_entries(time.time(), ignore_backoff=True, after=after)
            if not page:
                break
            waiting.extend(page)
            after = (page[-1].submit_time, page[-1].seq)
        types = self.store.pending_types([e.seq for e in waiting])
        for entry in waiting:
            if any(route(t, registrations, entry.declined) is None for t in types[entry.seq]):
                self.outbound.settle(entry.entry_id)

    def expire_overdue(self) -> None:
        """Fail (with an NDR) every waiting message past its lifetime."""
        for entry in self.store.overdue_entries(time.time()):
            self.outbound.expire(entry.entry_id, entry.last_error or "not sent in time")
        self.outbound.warn_delayed()

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
        while (busy := self._offering.get(entry_id)) is not None:
            await busy[1].wait()
        current = self.store.queue_entry(entry_id, with_recipients=False)
        if current.state is QueueState.PARKED:
            handle.released.discard(entry_id)
        elif current.state not in (QueueState.QUEUED, QueueState.DEFERRED, QueueState.RETRY):
            return Offered(Outcome.NOTHING)
        done = asyncio.Event()
        self._offering[entry_id] = (handle.name, done)
        try:
            return await self.outbound.offer(handle, current)
        except BaseException:
            # Not a transport's failure (the runner handles those): the store or the
            # spooler failed, or shutdown cancelled the call; the message may be left
            # in_flight.
            self._stranded = True
            raise
        finally:
            del self._offering[entry_id]
            done.set()

    def repair_stranded(self, *, force: bool = False) -> None:
        """Put messages that an error left in_flight back in the queue (or mark them
        uncertain if their hand-over had begun), as a restart would, and finish those
        whose recipients are all done. Call only while nothing is being offered (holding
        ``activity``, or at shutdown); ``force`` repairs even without a known error."""
        if not (self._stranded or force) or self._offering:
            return
        repaired = self.store.recover(parked=False)
        self._stranded = False
        if any(repaired.values()):
            log.warning("put messages left in flight by an error back: %s", repaired)
        self.outbound.settle_leftovers()

    # -- notifications from transports ------------------------------------------------

    def spooler_notify(self, handle: LogonHandle, flags: int, data: object | None) -> None:
        """IMAPISupport::SpoolerNotify from ``handle``'s transport."""
        if flags & NOTIFY_CRITICAL_ERROR:
            handle.critical = True
            self.status.modify(
                handle.name,
                {PR_STATUS_CODE: self.status.code(handle.name) | STATUS_FAILURE},
                STATUSROW_UPDATE,
            )
            return
        if flags & NOTIFY_SENTDEFERRED:
            if data is None:
                handle.release_all = True
            elif isinstance(data, bytes | bytearray):
                handle.released.add(bytes(data))
            self._wake.set()
        if flags & NOTIFY_NEWMAIL and not handle.receiving:
            # During the transport's own StartMessage loop the announcement is absorbed:
            # the loop that runs fetches the mail (issue #9 rule 11).
            handle.newmail_pending = True
            self._requests.set()
        if flags & NOTIFY_READYTOSEND:
            self._wake.set()
        if flags & NOTIFY_CONFIG_CHANGE and handle.logon is not None:
            handle.address_types = tuple(handle.logon.address_types())

    def row_changed(self, handle: LogonHandle, *, requested: bool = False) -> None:
        """A transport changed its row: a FLUSH bit set outside its turn in a flush is a
        request for service (a client flushed the transport's own status object, or the
        transport wants attention), which the spooler runs at its convenience: after the
        Send/Receive that is running, if any. ``requested``: a request made on its status
        object during its turn, served again now that the turn is over."""
        wants = self.status.code(handle.name) & (STATUS_INBOUND_FLUSH | STATUS_OUTBOUND_FLUSH)
        if (wants or requested) and not handle.in_flush:
            handle.flush_requested = True
            self._requests.set()

    def newmail(self, message: InboundMessage) -> None:
        """A message was stored in the Inbox (NotifyNewMail)."""
        for listener in list(self._newmail_listeners):
            try:
                listener(message)
            except Exception:
                log.exception("new-mail listener failed")

    def on_newmail(self, listener: Callable[[InboundMessage], None]) -> None:
        self._newmail_listeners.append(listener)

    def queue_changed(self) -> None:
        """Something was submitted or changed state: wake the sender."""
        self._wake.set()

    # -- the spooler's status row -------------------------------------------------------

    def set_spooler_flushing(self, flags: int) -> None:
        self._flushing_flags = flags
        self._refresh_spooler_row()

    def _refresh_spooler_row(self) -> None:
        """The spooler's row: the FLUSH bits of a running Send/Receive, and
        STATUS_FAILURE naming every background task that failed and is not working again
        (STATUS_AVAILABLE otherwise)."""
        code = flush_bits_for(self._flushing_flags)
        failures = self.supervisor.failures
        code |= STATUS_FAILURE if failures else STATUS_AVAILABLE
        text = "; ".join(failures.values()) if failures else None
        self.status.modify(
            SPOOLER_ROW, {PR_STATUS_CODE: code, PR_STATUS_STRING: text}, STATUSROW_UPDATE
        )

    def persist_status(self) -> None:
        """Save the status table so that other processes can show it."""
        try:
            self.store.save_status_rows(self.status.rows(), self.status.names())
            self.status.dirty = False
        except MapiError:
            log.warning("could not save the status table", exc_info=True)

    async def _persist_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.status.dirty:
                self.persist_status()
            self.supervisor.ok("status-persist")

    # -- FlushQueues ----------------------------------------------------------------------

    def check_flush(self, flags: int, target: bytes | None) -> list[LogonHandle]:
        """Validate a FlushQueues request on the spooler's status object; the handles to
        flush, in transport order."""
        if flags & ~VALID_FLUSH_FLAGS:
            raise MapiError(MAPI_E_UNKNOWN_FLAGS, f"unknown FlushQueues flags 0x{flags:08X}")
        if not flags & (FLUSH_UPLOAD | FLUSH_DOWNLOAD):
            raise MapiError(
                MAPI_E_INVALID_PARAMETER,
                "FlushQueues needs FLUSH_UPLOAD (send), FLUSH_DOWNLOAD (receive) or both",
            )
        if target is None:
            return list(self.handles)
        name = self.status.find(target)
        if name is None or name == SPOOLER_ROW:
            raise MapiError(
                MAPI_E_NOT_FOUND, f"no transport status row with entry id {target.hex()}"
            )
        handle = self.handle_named(name)
        methods = int(self.status.row(name).get(PR_RESOURCE_METHODS, 0))
        if not methods & STATUS_FLUSH_QUEUES:
            raise MapiError(MAPI_E_NO_SUPPORT, f"transport {name!r} does not support FlushQueues")
        return [handle]

    async def flush(
        self,
        flags: int,
        target: bytes | None = None,
        progress: ProgressCallback | None = None,
        *,
        wait: bool = False,
    ) -> FlushResult | FlushTicket:
        """IMAPIStatus::FlushQueues on the spooler's status object (DESIGN §6)."""
        targets = self.check_flush(flags, target)
        if self.shutting_down:
            raise MapiError(MAPI_E_BUSY, "the spooler is shutting down")
        if self.flusher.lock.locked() and (flags & FLUSH_ASYNC_OK or not wait):
            raise MapiError(MAPI_E_BUSY, "a Send/Receive is already running; wait for it to finish")
        if flags & FLUSH_NO_UI:
            progress = None
        if flags & FLUSH_ASYNC_OK:
            # Take the lock before returning, so that a request right after this one is
            # MAPI_E_BUSY even if the flush task has not started yet.
            await self.flusher.lock.acquire()
            task = asyncio.get_running_loop().create_task(
                self._flush_locked(targets, flags, progress, locked=True)
            )
            return FlushTicket(task)
        return await self._flush_locked(targets, flags, progress, locked=False)

    async def _flush_locked(
        self,
        targets: list[LogonHandle],
        flags: int,
        progress: ProgressCallback | None,
        *,
        locked: bool,
    ) -> FlushResult:
        if not locked:
            await self.flusher.lock.acquire()
        try:
            # Background sending stops between two messages when it sees a flush waiting.
            self._flush_waiting += 1
            try:
                await self.activity.acquire()
            finally:
                self._flush_waiting -= 1
            try:
                self.repair_stranded()
                return await self.flusher.run(targets, flags, progress)
            finally:
                self.activity.release()
        finally:
            self.flusher.lock.release()
            self._wake.set()

    def request_transport_flush(self, handle: LogonHandle, flags: int) -> None:
        """IMAPIStatus::FlushQueues on a transport's own status object: set the bits in its
        row and return; the spooler flushes it later, asynchronously to the caller."""
        bits = flush_bits_for(flags)
        handle.request_flags |= flags
        if handle.in_flush:
            # Its turn is running and may be past the part asked for: run it again after.
            handle.requested_in_turn = True
        self.status.modify(
            handle.name, {PR_STATUS_CODE: self.status.code(handle.name) | bits}, STATUSROW_UPDATE
        )
        self.row_changed(handle)

    async def _serve_requests(self) -> None:
        """Background: service transports that asked for a flush or announced new mail."""
        while not self.shutting_down:
            await self._requests.wait()
            self._requests.clear()
            if self.shutting_down:
                return
            for handle in self.handles:
                if not handle.logged_on or self.shutting_down:
                    continue
                if handle.flush_requested:
                    await self._serve_flush_request(handle)
                if handle.newmail_pending:
                    handle.newmail_pending = False
                    await self._receive(handle)
            self.supervisor.ok("flush-requests")

    async def _serve_flush_request(self, handle: LogonHandle) -> None:
        """Flush one transport that asked for it, once no Send/Receive runs. A full
        Send/Receive that ran meanwhile may have served the request in the transport's
        turn (which clears ``flush_requested``); one made after that turn is served now."""
        await self.flusher.lock.acquire()
        if not handle.flush_requested or self.shutting_down or not handle.logged_on:
            self.flusher.lock.release()
            return
        flags = handle.request_flags & (FLUSH_UPLOAD | FLUSH_DOWNLOAD | FLUSH_FORCE | FLUSH_NO_UI)
        flags |= flush_flags_for(self.status.code(handle.name))
        handle.flush_requested = False
        handle.request_flags = 0
        if not flags & (FLUSH_UPLOAD | FLUSH_DOWNLOAD):
            self.flusher.lock.release()
            return
        await self._flush_locked([handle], flags, None, locked=True)

    async def _receive(self, handle: LogonHandle) -> None:
        """Outside flushes: fetch what a transport announced (poll or NOTIFY_NEWMAIL)."""
        if not self.status.code(handle.name) & STATUS_INBOUND_ENABLED:
            return
        async with self.activity:
            if self.shutting_down:
                return
            await self.inbound.run(handle, lambda: not self.shutting_down and not handle.critical)

    async def _poll_loop(self, handle: LogonHandle) -> None:
        interval = handle.config.poll_interval
        while not self.shutting_down:
            await asyncio.sleep(interval)
            if not handle.logged_on or self.flusher.lock.locked():
                continue
            if not self.status.code(handle.name) & STATUS_INBOUND_ENABLED:
                continue
            try:
                waiting = await handle.call(lambda lg: lg.poll())
            except Exception as exc:
                log.warning("transport %s failed in poll: %s", handle.name, exc)
                continue
            if waiting > 0:
                await self._receive(handle)
            self.supervisor.ok(f"poll-{handle.name}")

    # -- sending as messages arrive -------------------------------------------------------

    def _can_send(self, handle: LogonHandle) -> bool:
        code = self.status.code(handle.name)
        return (
            handle.logged_on and bool(code & STATUS_OUTBOUND_ENABLED) and not code & STATUS_OFFLINE
        )

    async def revive(self, handle: LogonHandle, *, force: bool = False) -> bool:
        """True when ``handle`` is not OFFLINE, after giving an offline transport a
        ``validate_state`` to reconnect (at most every ``REVIVE_INTERVAL`` seconds unless
        ``force``): a transport that went offline on a network error comes back by itself
        once the server is reachable again, without needing FLUSH_FORCE."""
        if not self.status.code(handle.name) & STATUS_OFFLINE:
            return True
        now = time.monotonic()
        if not handle.logged_on or (not force and now - handle.revived_at < REVIVE_INTERVAL):
            return False
        handle.revived_at = now
        try:
            await handle.call(lambda logon: logon.validate_state(0))
        except Exception as exc:  # a transport's failure to reconnect is an answer too
            log.info("transport %s is still offline: %s", handle.name, exc)
        return not self.status.code(handle.name) & STATUS_OFFLINE

    async def _sender_loop(self) -> None:
        """Background (send_immediately): offer due messages to their transports. Runs
        supervised: an error (a full disk) is logged and shown on the spooler's row, and
        the loop starts again after a back-off, first putting back in the queue what the
        error left in flight."""
        self._wake.set()  # a restart looks at the queue at once
        while not self.shutting_down:
            wakeup = self.store.next_wakeup()
            timeout = 60.0 if wakeup is None else max(0.0, min(60.0, wakeup - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self.shutting_down:
                return
            if self.flusher.lock.locked():
                continue
            async with self.activity:
                if self.shutting_down:
                    return
                self.repair_stranded()
                await self.send_pass()
            self.supervisor.ok("sender")

    async def send_pass(self) -> None:
        """Bounce what no transport can take, then offer every due message once to each
        transport it routes to."""
        self.bounce_unroutable()
        for handle in self.handles:
            if self.shutting_down or self._flush_waiting:
                return
            if not await self.revive(handle) or not self._can_send(handle):
                continue
            work = self.work_for(handle, force=False, exclude=set())
            await self.offer_many(
                handle, work, keep_going=lambda: not (self.shutting_down or self._flush_waiting)
            )
