"""Operations run in this process, for the length of one call: what a front end uses when
no daemon runs on the store (the daemon's client is ``daemon.client.DaemonBackend``).

Both kinds of backend answer ``call(op, params, progress)`` with the same JSON-friendly
values (``operations``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from ..mapi import MAPI_E_BUSY, MapiError
from ..profile import Profile
from ..session import AsyncSession
from .operations import NEEDS_SPOOLER, dispatch

#: Receives an operation's events (a flush's progress) as JSON objects.
Progress = Callable[[dict[str, Any]], None]


class Backend(Protocol):
    """Runs one operation and returns its JSON-friendly result."""

    #: "daemon" or "local": where the operation ran (commands mention it in their output).
    kind: str

    def call(
        self, op: str, params: dict[str, Any] | None = None, progress: Progress | None = None
    ) -> Any: ...


class LocalBackend:
    """Runs each operation in this process: with the spooler (transports logged on) for
    flush and status, on the store alone (``AsyncSession.open``) for everything else."""

    kind = "local"

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    def call(
        self, op: str, params: dict[str, Any] | None = None, progress: Progress | None = None
    ) -> Any:
        return asyncio.run(self._run(op, dict(params or {}), progress))

    async def _run(self, op: str, params: dict[str, Any], progress: Progress | None) -> Any:
        def emit(event: dict[str, Any]) -> None:
            if progress is not None:
                progress(event)

        if op == "status" and self.profile.store_is_postgres:
            # The live workers' saved rows: a status must not start a worker that sends.
            return await self._saved_status()
        if op not in NEEDS_SPOOLER:
            async with await AsyncSession.open_async(self.profile) as offline:
                return await dispatch(offline, op, params, emit)
        if op == "flush" and params.get("async"):
            # The spooler lives only as long as this command: it must see the flush end.
            params["keep_waiting"] = True
        try:
            session = await AsyncSession.logon(self.profile)
        except MapiError as exc:
            if exc.hresult == MAPI_E_BUSY and op == "status":
                return await self._saved_status()
            raise
        async with session:
            return await dispatch(session, op, params, emit)

    def saved_status(self) -> Any:
        """The status table another spooler process saved (it holds the store's lock)."""
        return asyncio.run(self._saved_status())

    async def _saved_status(self) -> Any:
        async with await AsyncSession.open_async(self.profile) as offline:
            return await dispatch(offline, "saved_status", {}, lambda _event: None)
