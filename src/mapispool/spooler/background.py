"""The spooler's work outside flushes (DESIGN §6, last paragraph): sending queued mail as
it arrives, polling, fetching mail a transport announced, and flushing a transport that
asked for it on its own status object. Every loop runs supervised (``Supervisor``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from ..mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_FORCE,
    FLUSH_NO_UI,
    FLUSH_UPLOAD,
    STATUS_INBOUND_ENABLED,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_ENABLED,
)
from ..profile import Profile
from ..spi import flush_flags_for
from ..store import Store
from .flush import FlushCoordinator, FlushResult, ProgressCallback
from .handles import LogonHandle
from .inbound import InboundRunner
from .offering import Offering
from .status import StatusTable
from .supervision import Supervisor

log = logging.getLogger("mapispool.spooler")

#: Seconds between two attempts to bring an OFFLINE transport back outside a flush.
REVIVE_INTERVAL = 30.0


class BackgroundHost(Protocol):
    """What the background loops need from the spooler."""

    shutting_down: bool
    flush_waiting: int
    activity: asyncio.Lock
    profile: Profile
    store: Store
    status: StatusTable
    supervisor: Supervisor
    flusher: FlushCoordinator
    offering: Offering
    inbound: InboundRunner
    handles: list[LogonHandle]

    async def flush_locked(
        self,
        targets: list[LogonHandle],
        flags: int,
        progress: ProgressCallback | None,
        *,
        locked: bool,
    ) -> FlushResult: ...

    async def persist_loop(self) -> None: ...


class Background:
    """The background loops of one spooler, and the events that wake them: ``wake``
    (the queue changed: look for mail to send) and ``requests`` (a transport asked for
    a flush or announced new mail)."""

    def __init__(self, spooler: BackgroundHost) -> None:
        self.spooler = spooler
        self.wake = asyncio.Event()
        self.requests = asyncio.Event()

    def start(self) -> None:
        """Start the supervised loops the profile asks for."""
        spooler = self.spooler
        start = spooler.supervisor.start
        start("flush-requests", "Serving flush requests", self.serve_requests)
        start("status-persist", "Saving the status table", spooler.persist_loop)
        if spooler.profile.send_immediately:
            start("sender", "Background sending", self.sender_loop)
        for handle in spooler.handles:
            if handle.polls:
                start(
                    f"poll-{handle.name}",
                    f"Polling {handle.name}",
                    lambda h=handle: self.poll_loop(h),  # type: ignore[misc]
                )

    def stop(self) -> None:
        """Let every loop see that the spooler is shutting down."""
        self.wake.set()
        self.requests.set()

    # -- requests from transports -------------------------------------------------------

    async def serve_requests(self) -> None:
        """Service transports that asked for a flush or announced new mail."""
        spooler = self.spooler
        self.requests.set()  # a restart serves what is pending at once
        while not spooler.shutting_down:
            await self.requests.wait()
            self.requests.clear()
            if spooler.shutting_down:
                return
            for handle in spooler.handles:
                if not handle.logged_on or spooler.shutting_down:
                    continue
                if handle.flush_requested:
                    await self.serve_flush_request(handle)
                if handle.newmail_pending:
                    handle.newmail_pending = False
                    await self.receive(handle)
            spooler.supervisor.ok("flush-requests")

    async def serve_flush_request(self, handle: LogonHandle) -> None:
        """Flush one transport that asked for it, once no Send/Receive runs. A full
        Send/Receive that ran meanwhile may have served the request in the transport's
        turn (which clears ``flush_requested``); one made after that turn is served now."""
        spooler = self.spooler
        await spooler.flusher.lock.acquire()
        if not handle.flush_requested or spooler.shutting_down or not handle.logged_on:
            spooler.flusher.lock.release()
            return
        flags = handle.request_flags & (FLUSH_UPLOAD | FLUSH_DOWNLOAD | FLUSH_FORCE | FLUSH_NO_UI)
        flags |= flush_flags_for(spooler.status.code(handle.name))
        handle.flush_requested = False
        handle.request_flags = 0
        if not flags & (FLUSH_UPLOAD | FLUSH_DOWNLOAD):
            spooler.flusher.lock.release()
            return
        try:
            await spooler.flush_locked([handle], flags, None, locked=True)
        except Exception:
            # Not served: asked again, so that the restarted loop tries it once more.
            handle.flush_requested = True
            handle.request_flags |= flags
            raise

    async def receive(self, handle: LogonHandle) -> None:
        """Fetch what a transport announced (poll or NOTIFY_NEWMAIL)."""
        spooler = self.spooler
        if not spooler.status.code(handle.name) & STATUS_INBOUND_ENABLED:
            return
        async with spooler.activity:
            if spooler.shutting_down:
                return
            await spooler.inbound.run(
                handle, lambda: not spooler.shutting_down and not handle.critical
            )

    async def poll_loop(self, handle: LogonHandle) -> None:
        spooler = self.spooler
        interval = handle.config.poll_interval
        while not spooler.shutting_down:
            await asyncio.sleep(interval)
            if not handle.logged_on or spooler.flusher.lock.locked():
                continue
            if not spooler.status.code(handle.name) & STATUS_INBOUND_ENABLED:
                continue
            try:
                waiting = await handle.call(lambda lg: lg.poll())
            except Exception as exc:
                log.warning("transport %s failed in poll: %s", handle.name, exc)
                continue
            if waiting > 0:
                await self.receive(handle)
            spooler.supervisor.ok(f"poll-{handle.name}")

    # -- sending as messages arrive -------------------------------------------------------

    def can_send(self, handle: LogonHandle) -> bool:
        code = self.spooler.status.code(handle.name)
        return (
            handle.logged_on and bool(code & STATUS_OUTBOUND_ENABLED) and not code & STATUS_OFFLINE
        )

    async def revive(self, handle: LogonHandle, *, force: bool = False) -> bool:
        """True when ``handle`` is not OFFLINE, after giving an offline transport a
        ``validate_state`` to reconnect (at most every ``REVIVE_INTERVAL`` seconds unless
        ``force``): a transport that went offline on a network error comes back by itself
        once the server is reachable again, without needing FLUSH_FORCE."""
        status = self.spooler.status
        if not status.code(handle.name) & STATUS_OFFLINE:
            return True
        now = time.monotonic()
        if not handle.logged_on or (not force and now - handle.revived_at < REVIVE_INTERVAL):
            return False
        handle.revived_at = now
        try:
            await handle.call(lambda logon: logon.validate_state(0))
        except Exception as exc:  # a transport's failure to reconnect is an answer too
            log.info("transport %s is still offline: %s", handle.name, exc)
        return not status.code(handle.name) & STATUS_OFFLINE

    async def sender_loop(self) -> None:
        """Background (send_immediately): offer due messages to their transports. Runs
        supervised: an error (a full disk) is logged and shown on the spooler's row, and
        the loop starts again after a back-off, first putting back in the queue what the
        error left in flight."""
        spooler = self.spooler
        self.wake.set()  # a restart looks at the queue at once
        while not spooler.shutting_down:
            wakeup = await spooler.store.next_wakeup()
            timeout = 60.0 if wakeup is None else max(0.0, min(60.0, wakeup - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            self.wake.clear()
            if spooler.shutting_down:
                return
            if spooler.flusher.lock.locked():
                continue
            async with spooler.activity:
                if spooler.shutting_down:
                    return
                await spooler.offering.repair_stranded()
                await self.send_pass()
            spooler.supervisor.ok("sender")

    async def send_pass(self) -> None:
        """Bounce what no transport can take, then offer every due message once to each
        transport it routes to."""
        spooler = self.spooler

        def keep_going() -> bool:
            return not (spooler.shutting_down or spooler.flush_waiting)

        await spooler.offering.bounce_unroutable()
        for handle in spooler.handles:
            if not keep_going():
                return
            if not await self.revive(handle) or not self.can_send(handle):
                continue
            tried: set[bytes] = set()
            while keep_going():
                claims = await spooler.offering.claim_work(
                    handle, force=False, exclude=tried, first=not tried
                )
                if not claims:
                    break
                tried.update(c.entry_id for c in claims)
                await spooler.offering.offer_many(handle, claims, keep_going=keep_going)
