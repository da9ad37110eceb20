"""One logged-on transport as the spooler sees it (``LogonHandle``), and the ``Support``
object it hands to that transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from ..mapi import LOGON_SP_POLL
from ..profile import TransportConfig
from ..spi import OutboundMessage, Recipient, Support, TransportLogon, TransportProvider

if TYPE_CHECKING:
    from .engine import Spooler

T = TypeVar("T")


class LogonHandle:
    """A transport section of the profile: its provider, its logon (once logged on),
    its status-row name and the locks that serialize calls into it (DESIGN §5)."""

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        self.name = config.name
        self.provider: TransportProvider | None = None
        self.logon: TransportLogon | None = None
        self.address_types: tuple[str, ...] = ()
        self.logon_error: str | None = None
        self.critical = False
        #: Entry ids this transport released with NOTIFY_SENTDEFERRED (a release of "all"
        #: is recorded as the ids it held at that moment).
        self.released: set[bytes] = set()
        #: The BEGIN notifications it got at logon (only the directions it has).
        self.begun = 0
        #: Set during this transport's turn in a flush (steps 1-13 for it).
        self.in_flush = False
        #: The transport's row asked for a flush outside its turn (its status object was
        #: used, or it set a FLUSH bit itself); ``request_flags`` are the flags asked for.
        self.flush_requested = False
        self.request_flags = 0
        #: A request on its own status object arrived during its turn: run it again after.
        self.requested_in_turn = False
        #: NOTIFY_NEWMAIL arrived and is not serviced yet.
        self.newmail_pending = False
        #: Set while its StartMessage loop runs (which absorbs NOTIFY_NEWMAIL).
        self.receiving = False
        #: When the spooler last asked an OFFLINE transport to reconnect (monotonic).
        self.revived_at = float("-inf")
        self._exclusive = asyncio.Lock()
        self._slots = asyncio.Semaphore(1)
        self._slot_count = 1

    @property
    def logged_on(self) -> bool:
        return self.logon is not None and not self.critical

    @property
    def polls(self) -> bool:
        return self.logon is not None and bool(self.logon.logon_flags & LOGON_SP_POLL)

    def attach(self, provider: TransportProvider, logon: TransportLogon) -> None:
        self.provider = provider
        self.logon = logon
        self._slot_count = max(1, int(logon.max_in_flight))
        self._slots = asyncio.Semaphore(self._slot_count)

    @property
    def max_in_flight(self) -> int:
        return self._slot_count

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the logon for one non-submit call: no other call runs meanwhile."""
        async with self._exclusive:
            taken = 0
            try:
                for _ in range(self._slot_count):
                    await self._slots.acquire()
                    taken += 1
                yield
            finally:
                for _ in range(taken):
                    self._slots.release()

    @asynccontextmanager
    async def submit_slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_in_flight`` slots for a submit/end pair."""
        async with self._exclusive:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    async def call(self, make: Callable[[TransportLogon], Awaitable[T]]) -> T:
        """Run one serialized SPI call."""
        assert self.logon is not None
        async with self.exclusive():
            return await make(self.logon)


class SpoolerSupport(Support):
    """IMAPISupport for one logon: every call goes to the engine."""

    def __init__(self, spooler: Spooler, handle: LogonHandle) -> None:
        self._spooler = spooler
        self._handle = handle
        self._logger = logging.getLogger(f"mapispool.transport.{handle.name}")

    @property
    def name(self) -> str:
        return self._handle.name

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._handle.config.settings

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    def modify_status_row(self, props: Mapping[int, object], flags: int = 0) -> None:
        self._spooler.status.modify(self._handle.name, props, flags)
        self._spooler.row_changed(self._handle)

    def status_row(self) -> Mapping[int, object]:
        return self._spooler.status.row(self._handle.name)

    def spooler_notify(self, flags: int, data: object | None = None) -> None:
        self._spooler.spooler_notify(self._handle, flags, data)

    # The SPI's Support methods are synchronous (source-compatible for plug-in
    # transports); the store is asynchronous: each call runs on the spooler's bridge.

    def status_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        outbound = self._spooler.outbound
        self._spooler.bridge.run(lambda: outbound.status_recips(self._handle, message, recipients))

    def delivered_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        outbound = self._spooler.outbound
        self._spooler.bridge.run(
            lambda: outbound.delivered_recips(self._handle, message, recipients)
        )

    def has_dedupe_key(self, key: str) -> bool:
        return self._spooler.bridge.run(lambda: self._spooler.store.has_dedupe_key(key))

    def sync(self) -> None:
        self._spooler.bridge.run(self._spooler.store.sync)

    def get_state(self, key: str) -> Any:
        store = self._spooler.store
        return self._spooler.bridge.run(lambda: store.get_transport_state(self._handle.name, key))

    def set_state(self, key: str, value: Any) -> None:
        store = self._spooler.store
        self._spooler.bridge.run(lambda: store.set_transport_state(self._handle.name, key, value))
