"""The spooler: logs transports on, sends queued mail, polls for new mail, runs flushes,
keeps the status table, and shuts down without losing anything (DESIGN §2, §6, §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
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
    NOTIFY_CANCEL_MESSAGE,
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
    STATUS_INBOUND_FLUSH,
    STATUS_OUTBOUND_FLUSH,
    STATUS_VALIDATE_STATE,
    STATUSROW_UPDATE,
    MapiError,
)
from ..profile import Profile
from ..spi import InboundMessage, flush_bits_for
from ..store import Outcome, QueueEntry, QueueState, Store
from .background import Background
from .bridge import BlockingBridge
from .flush import FlushCoordinator, FlushResult, ProgressCallback
from .handles import LogonHandle
from .inbound import InboundRunner
from .logons import SpoolerSupport
from .offering import Offering
from .outbound import OutboundRunner
from .pages import parked_ids, parked_pages
from .retry import RetryPolicy
from .routing import Registration
from .status import SPOOLER_ROW, StatusTable
from .supervision import Supervisor

log = logging.getLogger("mapispool.spooler")

VALID_FLUSH_FLAGS = FLUSH_UPLOAD | FLUSH_DOWNLOAD | FLUSH_FORCE | FLUSH_NO_UI | FLUSH_ASYNC_OK
#: How long shutdown waits for a transport call in progress before giving up on it.
SHUTDOWN_GRACE = 30.0


@dataclass
class FlushTicket:
    """A flush started with FLUSH_ASYNC_OK: its task and, once done, its result."""

    task: asyncio.Task[FlushResult]


class Spooler:
    """One spooler per store. Create with ``Spooler(profile, store)``, then ``await start()``."""

    def __init__(self, profile: Profile, store: Store, worker: str = "") -> None:
        self.profile = profile
        self.store = store
        #: The name this spooler registers under on a many-worker store ("" = host:pid).
        self.worker = worker
        self.status = StatusTable()
        self.retry_policy = RetryPolicy(profile.retry)
        self.outbound = OutboundRunner(self)
        self.inbound = InboundRunner(self)
        self.flusher = FlushCoordinator(self)
        self.handles = [LogonHandle(config) for config in profile.transports]
        self.shutting_down = False
        self.activity = asyncio.Lock()
        self.supervisor = Supervisor(self._refresh_spooler_row)
        self.background = Background(self)
        self.offering = Offering(self)
        #: Flushes waiting for ``activity``: background sending stops between two messages.
        self.flush_waiting = 0
        self._flushing_flags = 0
        self._newmail_listeners: list[Callable[[InboundMessage], None]] = []
        self.recovered: dict[str, int] = {}
        #: Runs store calls for the synchronous Support methods of transports.
        self.bridge = BlockingBridge()

    # -- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        """Take the store's spooler lock, repair what a killed spooler left, log every
        transport on in transport order, and start the background work."""
        if not await self.store.acquire_spooler_lock(self.worker):
            raise MapiError(MAPI_E_BUSY, self._busy_text())
        self.recovered = await self.store.recover()
        self.status.add_row(
            SPOOLER_ROW,
            display_name="Spooler",
            provider_display="mapispool",
            resource_type=MAPI_SPOOLER,
            resource_methods=STATUS_VALIDATE_STATE | STATUS_FLUSH_QUEUES,
        )
        # The store lost commits or is damaged (store.integrity): the spooler row says so
        # for as long as this spooler runs; the store logged it already.
        self._refresh_spooler_row()
        for handle in self.handles:
            await self._logon(handle)
        await self.outbound.settler.settle_leftovers()
        await self.persist_status()
        self.background.start()

    def _busy_text(self) -> str:
        where = self.store.location
        if self.store.many_workers:
            return f"a live worker named {self.worker!r} runs on {where}; name this one --worker"
        return (
            f"another spooler is already running on {where}; "
            "talk to it (mapispool commands do) or stop it first"
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
        self.background.stop()
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
            await self.offering.repair_stranded(force=True)
        except Exception:
            log.exception("could not put messages left in flight back in the queue")
        await self.persist_status()
        await self.store.release_spooler_lock()
        self.bridge.close()

    async def _logoff(self, handle: LogonHandle) -> None:
        if handle.logon is None:
            return
        try:
            # Messages the transport holds go back to the queue unsent, their recipients
            # pending (marks never counted as delivery), even if the transport objects.
            async for page in parked_pages(self.store, handle.name):
                for entry in page:
                    await self._unpark(handle, entry)
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

    async def _unpark(self, handle: LogonHandle, entry: QueueEntry) -> None:
        """Take a parked message back from a transport that logs off."""
        try:
            await handle.call(lambda lg: lg.transport_notify(NOTIFY_ABORT_DEFERRED, entry.entry_id))
        except Exception:
            log.exception("transport %s failed in NOTIFY_ABORT_DEFERRED", handle.name)
        await self.store.record_one(
            Outcome(entry.entry_id, QueueState.QUEUED, event="unparked", transport=handle.name)
        )
        handle.released.discard(entry.entry_id)

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
                # "All of them" means the ones it holds now, never ones it defers later.
                parked = self.bridge.run(lambda: parked_ids(self.store, handle.name))
                handle.released.update(parked)
            elif isinstance(data, bytes | bytearray):
                handle.released.add(bytes(data))
            self.background.wake.set()
        if flags & NOTIFY_NEWMAIL and not handle.receiving:
            # During the transport's own StartMessage loop the announcement is absorbed:
            # the loop that runs fetches the mail (issue #9 rule 11).
            handle.newmail_pending = True
            self.background.requests.set()
        if flags & NOTIFY_READYTOSEND:
            self.background.wake.set()
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
            self.background.requests.set()

    def newmail(self, message: InboundMessage) -> None:
        """A message was stored in the Inbox (NotifyNewMail)."""
        for listener in list(self._newmail_listeners):
            try:
                listener(message)
            except Exception:
                log.exception("new-mail listener failed")

    def on_newmail(self, listener: Callable[[InboundMessage], None]) -> None:
        self._newmail_listeners.append(listener)

    @property
    def running_flush(self) -> FlushResult | None:
        """The result, still filling, of the Send/Receive running now; None between them."""
        return self.flusher.current

    def queue_changed(self) -> None:
        """Something was submitted or changed state: wake the sender."""
        self.background.wake.set()

    # -- the spooler's status row -------------------------------------------------------

    def set_spooler_flushing(self, flags: int) -> None:
        self._flushing_flags = flags
        self._refresh_spooler_row()

    def _refresh_spooler_row(self) -> None:
        """The spooler's row: the FLUSH bits of a running Send/Receive, and
        STATUS_FAILURE naming every background task that failed and is not working again
        (STATUS_AVAILABLE otherwise)."""
        code = flush_bits_for(self._flushing_flags)
        # An integrity alert from the store (store.integrity) stays for as long as this
        # spooler runs, beside the failures of supervised background tasks.
        alerts = [self.store.integrity_alert] if self.store.integrity_alert else []
        alerts += self.supervisor.failures.values()
        code |= STATUS_FAILURE if alerts else STATUS_AVAILABLE
        text = "; ".join(alerts) if alerts else None
        self.status.modify(
            SPOOLER_ROW, {PR_STATUS_CODE: code, PR_STATUS_STRING: text}, STATUSROW_UPDATE
        )

    async def persist_status(self) -> None:
        """Save the status table so that other processes can show it."""
        try:
            await self.store.save_status_rows(self.status.rows(), self.status.names())
            self.status.dirty = False
        except MapiError:
            log.warning("could not save the status table", exc_info=True)

    async def persist_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.status.dirty:
                await self.persist_status()
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
            await self.flusher.acquire(wait=False)
            task = asyncio.get_running_loop().create_task(
                self.flush_locked(targets, flags, progress, locked=True)
            )
            return FlushTicket(task)
        return await self.flush_locked(targets, flags, progress, locked=False, wait=wait)

    async def flush_locked(
        self,
        targets: list[LogonHandle],
        flags: int,
        progress: ProgressCallback | None,
        *,
        locked: bool,
        wait: bool = False,
    ) -> FlushResult:
        if not locked:
            await self.flusher.acquire(wait=wait)
        try:
            # Background sending stops between two messages when it sees a flush waiting.
            self.flush_waiting += 1
            try:
                await self.activity.acquire()
            finally:
                self.flush_waiting -= 1
            try:
                await self.offering.repair_stranded()
                return await self.flusher.run(targets, flags, progress)
            finally:
                self.activity.release()
        finally:
            await self.flusher.release()
            self.background.wake.set()

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

    # -- what a session asks of the spooler (by transport name, never by handle) --------

    def request_flush_of(self, name: str, flags: int) -> None:
        """FlushQueues on the status object of transport ``name``: check ``flags`` as the
        spooler's object would (``FLUSH_ASYNC_OK`` aside: such a request never waits),
        then ``request_transport_flush``."""
        self.check_flush(flags & ~FLUSH_ASYNC_OK, None)
        self.request_transport_flush(self.handle_named(name), flags)

    async def validate_state(self, flags: int, name: str | None = None) -> None:
        """IMAPIStatus::ValidateState: every logged-on transport in order, or ``name``."""
        handles = list(self.handles) if name is None else [self.handle_named(name)]
        for handle in handles:
            if handle.logged_on:
                await handle.call(lambda logon: logon.validate_state(flags))

    async def take_back_parked(self, name: str, entry_id: bytes) -> None:
        """A person holds, purges or cancels a message transport ``name`` parked
        (END_DONT_RESEND): tell it ``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``. A
        transport gone from the profile or logged off has nothing to give back; its
        failure to answer is logged, since the person's request goes ahead anyway."""
        try:
            handle = self.handle_named(name)
        except MapiError:
            return
        handle.released.discard(entry_id)
        if handle.logon is None:
            return
        try:
            await handle.logon.transport_notify(
                NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE, entry_id
            )
        except Exception:
            log.exception("transport %s failed to give back %s", name, entry_id.hex())

    async def retry_requested(self, entry_id: bytes) -> None:
        """A person asked to send ``entry_id`` again (it is queued once more): finish it
        now when nothing is left to send, else wake the sender."""
        await self.outbound.settle(entry_id)
        self.queue_changed()

    async def revive(self, handle: LogonHandle, *, force: bool = False) -> bool:
        """``Background.revive``: True when ``handle`` is not OFFLINE (after a try)."""
        return await self.background.revive(handle, force=force)
