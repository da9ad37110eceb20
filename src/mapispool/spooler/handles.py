"""One logged-on transport as the spooler sees it: its provider, its logon, its status-row
name and the locks that serialize calls into it (DESIGN §5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from ..mapi import LOGON_SP_POLL
from ..profile import TransportConfig
from ..spi import TransportLogon, TransportProvider

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
