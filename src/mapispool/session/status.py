"""``AsyncStatus`` (IMAPIStatus) and ``AsyncFlushHandle``, what an asynchronous
``flush_queues`` returns. They talk to the spooler through its public methods only."""

from __future__ import annotations

import asyncio

from ..mapi import (
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_SUPPORT,
    PR_ENTRYID,
    PR_RESOURCE_METHODS,
    STATUS_FLUSH_QUEUES,
    MapiError,
)
from ..spooler.engine import FlushTicket, Spooler
from ..spooler.flush import FlushResult, ProgressCallback
from ..spooler.status import SPOOLER_ROW, StatusRow


class AsyncFlushHandle:
    """What ``flush_queues(FLUSH_ASYNC_OK)`` returns at once."""

    def __init__(self, ticket: FlushTicket | asyncio.Task[FlushResult]) -> None:
        # A client-mode session (``daemon.attached``) hands over the task of its request.
        self._task = ticket if isinstance(ticket, asyncio.Task) else ticket.task

    @property
    def done(self) -> bool:
        return self._task.done()

    @property
    def result(self) -> FlushResult | None:
        """The flush's result once it is done, else None."""
        return self._task.result() if self._task.done() else None

    async def wait(self, timeout: float | None = None) -> FlushResult:  # noqa: ASYNC109 - mirrors the sync API
        """Wait for the flush; ``TimeoutError`` after ``timeout`` seconds (it goes on)."""
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self._task)


class AsyncStatus:
    """IMAPIStatus: the spooler's status object or a transport's (``open_status``)."""

    def __init__(self, spooler: Spooler, name: str, *, unavailable: str | None = None) -> None:
        self._spooler = spooler
        self.name = name
        # Why this object cannot flush or validate (a session on the store alone), or None.
        self._unavailable = unavailable

    def _check_available(self) -> None:
        if self._unavailable is not None:
            raise MapiError(MAPI_E_NO_SUPPORT, self._unavailable)

    @property
    def is_spooler(self) -> bool:
        return self.name == SPOOLER_ROW

    @property
    def row(self) -> StatusRow:
        """The current status row (a mapping from property tag to value)."""
        return self._spooler.status.row(self.name)

    @property
    def entry_id(self) -> bytes:
        return bytes(self.row[PR_ENTRYID])

    async def flush_queues(
        self,
        flags: int,
        target: bytes | None = None,
        progress: ProgressCallback | None = None,
        *,
        wait: bool = False,
    ) -> FlushResult | AsyncFlushHandle | None:
        """IMAPIStatus::FlushQueues.

        On the spooler's object: flush every transport in transport order, or only
        ``target`` (a transport row's ``PR_ENTRYID``); returns a ``FlushResult`` when done,
        or an ``AsyncFlushHandle`` at once with ``FLUSH_ASYNC_OK``. While another flush
        runs: ``MAPI_E_BUSY``, unless a synchronous caller passes ``wait=True``.
        On a transport's object: sets the request in the transport's row and returns None
        at once; the spooler runs the flush for that transport later.
        On a session opened on the store alone: ``MAPI_E_NO_SUPPORT``."""
        self._check_available()
        if self.is_spooler:
            outcome = await self._spooler.flush(flags, target, progress, wait=wait)
            if isinstance(outcome, FlushTicket):
                return AsyncFlushHandle(outcome)
            return outcome
        if target is not None:
            raise MapiError(MAPI_E_INVALID_PARAMETER, "a transport's status object takes no target")
        if not int(self.row.get(PR_RESOURCE_METHODS, 0)) & STATUS_FLUSH_QUEUES:
            raise MapiError(MAPI_E_NO_SUPPORT, f"transport {self.name!r} does not flush queues")
        self._spooler.request_flush_of(self.name, flags)
        return None

    async def validate_state(self, flags: int = 0) -> None:
        """IMAPIStatus::ValidateState: the spooler's asks every transport; a transport's
        object asks that transport."""
        self._check_available()
        await self._spooler.validate_state(flags, None if self.is_spooler else self.name)

    async def settings_dialog(self, flags: int = 0) -> None:
        raise MapiError(MAPI_E_NO_SUPPORT, "there is no settings dialog; edit the profile")

    async def change_password(self, old: str, new: str, flags: int = 0) -> None:
        raise MapiError(MAPI_E_NO_SUPPORT, "passwords live outside mapispool's profile")
