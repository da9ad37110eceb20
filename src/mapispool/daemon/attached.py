"""The Python API as a client of a running ``mapispool serve`` ("client mode").

``AsyncSession.logon`` returns a ``DaemonClientSession`` when another process holds the
store's spooler lock and our own daemon answers on the store's control socket. The
session writes submitted messages to the store itself (as the CLI does) and tells the
daemon; it reads the queue and folders from the store; the status table, FlushQueues and
queue management go through the daemon, whose spooler owns the transports. Transport
status objects stay in the daemon: ``open_status`` on a transport's row raises
``MAPI_E_NO_SUPPORT``.

The session package knows nothing of the daemon: ``install()`` registers
``DaemonClientSession.attach`` with ``session.register_client_mode``; the ``mapispool``
package calls it on import, so every ``AsyncSession.logon`` has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from ..app.shapes import flush_result_from_dict, progress_from_dict
from ..mapi import (
    FLUSH_ASYNC_OK,
    MAPI_E_CALL_FAILED,
    MAPI_E_NO_SUPPORT,
    MAPI_E_NOT_FOUND,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    MapiError,
)
from ..profile import Profile
from ..session import AsyncFlushHandle, AsyncSession, AsyncStatus, register_client_mode
from ..spooler.bridge import BlockingBridge
from ..spooler.engine import Spooler
from ..spooler.flush import FlushResult, ProgressCallback
from ..spooler.status import SPOOLER_ROW, StatusRow
from ..status_changes import StatusCallback, StatusChange, advise_iterator, poll_rows
from ..store import Store
from ..store.codec import load_props
from . import trust
from .protocol import MAX_REQUEST, WAKE_TIMEOUT, decode, encode, raise_error, socket_path

log = logging.getLogger("mapispool.session")

Event = Callable[[dict[str, Any]], None]
T = TypeVar("T")


class DaemonLink:
    """Requests to the daemon at ``path``, one connection per request, each checked to be
    our own daemon's before a byte is sent (``trust``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def call(
        self,
        op: str,
        params: dict[str, Any],
        on_event: Event | None = None,
        started: asyncio.Future[None] | None = None,
    ) -> Any:
        """Run ``op`` in the daemon and return its result; ``on_event`` receives progress
        events, ``started`` is set on the ``started`` event (or gets the error)."""
        try:
            return await self._call(op, params, on_event, started)
        except BaseException as exc:
            if started is not None and not started.done():
                if isinstance(exc, asyncio.CancelledError):
                    started.cancel()
                else:
                    started.set_exception(exc)
            raise
        finally:
            if started is not None and not started.done():
                started.set_result(None)

    async def _call(
        self,
        op: str,
        params: dict[str, Any],
        on_event: Event | None,
        started: asyncio.Future[None] | None,
    ) -> Any:
        problem = trust.socket_file_problem(self.path)
        if problem is not None:
            raise MapiError(MAPI_E_CALL_FAILED, f"not using the daemon's socket: {problem}")
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.path), limit=MAX_REQUEST)
        except OSError as exc:
            raise MapiError(MAPI_E_CALL_FAILED, f"the daemon does not answer: {exc}") from exc
        try:
            problem = trust.peer_problem(writer.get_extra_info("socket"))
            if problem is not None:
                raise MapiError(MAPI_E_CALL_FAILED, f"not using {self.path}: {problem}")
            writer.write(encode({"op": op, "params": params}))
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    raise MapiError(MAPI_E_CALL_FAILED, "the daemon closed the control socket")
                message = decode(line)
                event = message.get("event")
                if event == "started" and started is not None and not started.done():
                    started.set_result(None)
                elif event is not None and on_event is not None:
                    on_event(message)
                elif event is None:
                    if message.get("ok"):
                        return message.get("result")
                    raise_error(dict(message.get("error") or {}))
        except OSError as exc:
            raise MapiError(MAPI_E_CALL_FAILED, f"lost the daemon's control socket: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):  # the daemon went away first
                await writer.wait_closed()


def _progress_event(callback: ProgressCallback | None) -> Event | None:
    if callback is None:
        return None

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "progress":
            callback(progress_from_dict(event))

    return on_event


class DaemonSpoolerStatus(AsyncStatus):
    """The spooler's status object of a client-mode session: FlushQueues runs in the
    daemon; ``row`` is the spooler row the daemon last saved in the store."""

    def __init__(self, session: DaemonClientSession) -> None:
        super().__init__(session.spooler, SPOOLER_ROW)
        self._session = session

    @property
    def row(self) -> StatusRow:
        rows = self._session.saved_rows()
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, "the daemon has not saved its status table yet")
        return rows[0]

    async def flush_queues(
        self,
        flags: int,
        target: bytes | None = None,
        progress: ProgressCallback | None = None,
        *,
        wait: bool = False,
    ) -> FlushResult | AsyncFlushHandle | None:
        """IMAPIStatus::FlushQueues on the daemon's spooler; the same contract as in
        process (``MAPI_E_BUSY`` while another flush runs, at once with
        ``FLUSH_ASYNC_OK``)."""
        params: dict[str, Any] = {"flags": flags, "target": target.hex() if target else None}
        params["wait"] = wait
        link, on_event = self._session.link, _progress_event(progress)
        if not flags & FLUSH_ASYNC_OK:
            return flush_result_from_dict(await link.call("flush", params, on_event))
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def run() -> FlushResult:
            return flush_result_from_dict(await link.call("flush", params, on_event, started))

        task = self._session.track(asyncio.get_running_loop().create_task(run()))
        try:
            await started
        except BaseException:
            await asyncio.gather(task, return_exceptions=True)  # its error is ours, raised
            raise
        return AsyncFlushHandle(task)

    async def validate_state(self, flags: int = 0) -> None:
        raise MapiError(
            MAPI_E_NO_SUPPORT,
            "validate_state runs in the daemon's process; a flush_queues reconnects "
            "transports that are offline",
        )


class DaemonClientSession(AsyncSession):
    """A session whose spooler is a running daemon's (see the module docstring)."""

    def __init__(self, profile: Profile, store: Store, link: DaemonLink) -> None:
        super().__init__(profile, store, Spooler(profile, store), spooler_running=False)
        # ``row`` and ``open_status`` are synchronous, the store is not: they read the
        # saved rows through a helper thread's loop (a short blocking read).
        self._bridge = BlockingBridge()
        self.link = link
        self._requests: set[asyncio.Task[Any]] = set()

    def track(self, task: asyncio.Task[T]) -> asyncio.Task[T]:
        """Keep a request that outlives its call (an async flush) until it ends or the
        session logs off (the daemon's flush goes on; only our wait for it ends)."""
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)
        return task

    def saved_rows(self) -> list[StatusRow]:
        """The status rows the daemon last saved in the store, read synchronously."""
        return list(self._bridge.run(self.store.load_status_rows))

    async def logoff(self) -> None:
        """Stop waiting for the daemon's flushes and close the store; the daemon runs on."""
        for task in list(self._requests):
            task.cancel()
        await asyncio.gather(*self._requests, return_exceptions=True)
        try:
            await super().logoff()
        finally:
            self._bridge.close()

    @property
    def mode(self) -> str:
        return "client"

    @classmethod
    async def attach(cls, profile: Profile, store: Store) -> DaemonClientSession | None:
        """A client-mode session when our daemon answers on the store's socket, else None
        (always None on a PostgreSQL store: a second worker is not a daemon's client)."""
        if store.many_workers:
            return None
        link = DaemonLink(socket_path(profile.store_path()))
        try:
            # A daemon that is stopped (SIGSTOP) or wedged counts as no daemon.
            async with asyncio.timeout(WAKE_TIMEOUT):
                await link.call("ping", {})
        except TimeoutError:
            log.info("the store's daemon did not answer within %g s", WAKE_TIMEOUT)
            return None
        except MapiError as exc:
            log.info("another process runs the store's spooler, and no daemon: %s", exc)
            return None
        return cls(profile, store, link)

    async def announce_submitted(self, entry_id: bytes) -> None:
        """The message is in the store (durable): tell the daemon. A daemon that does not
        answer is logged, not raised: the message is queued and the daemon's next look at
        the queue (within a minute) sends it."""
        try:
            async with asyncio.timeout(WAKE_TIMEOUT):
                await self.link.call("submitted", {"entry_id": entry_id.hex()})
        except TimeoutError:
            log.warning(
                "queued %s; the daemon did not answer within %g s", entry_id.hex(), WAKE_TIMEOUT
            )
        except MapiError as exc:
            log.warning("queued %s; the daemon did not take the news: %s", entry_id.hex(), exc)

    async def status_table(self) -> list[StatusRow]:
        """The daemon's live status table."""
        return [load_props(str(text)) for text in await self.link.call("status_rows", {})]

    def status_changes(self) -> AsyncIterator[StatusChange]:
        return poll_rows(self.status_table)  # the daemon's rows, read once a second

    def advise_status(self, callback: StatusCallback) -> Callable[[], None]:
        return advise_iterator(self.status_changes(), callback)

    def spooler_status(self) -> AsyncStatus:
        return DaemonSpoolerStatus(self)

    def open_status(self, entry_id: bytes) -> AsyncStatus:
        """The spooler's status object by its entry id; a transport's object lives in the
        daemon (``MAPI_E_NO_SUPPORT``: flush it with ``flush_queues(flags, target)``)."""
        rows = self.saved_rows()
        for position, row in enumerate(rows):
            if bytes(row.get(PR_ENTRYID, b"")) == bytes(entry_id):
                if position == 0:
                    return DaemonSpoolerStatus(self)
                raise MapiError(
                    MAPI_E_NO_SUPPORT,
                    f"transport {row.get(PR_DISPLAY_NAME)!r} runs in the daemon; flush it "
                    "with spooler_status().flush_queues(flags, target=its entry id)",
                )
        raise MapiError(MAPI_E_NOT_FOUND, f"no status row with entry id {bytes(entry_id).hex()}")

    async def _queue_action(self, action: str, entry_id: bytes) -> None:
        await self.link.call("queue_action", {"action": action, "entry_id": entry_id.hex()})

    async def cancel(self, entry_id: bytes) -> None:
        await self._queue_action("cancel", entry_id)

    async def hold(self, entry_id: bytes) -> None:
        await self._queue_action("hold", entry_id)

    async def release(self, entry_id: bytes) -> None:
        await self._queue_action("release", entry_id)

    async def retry(self, entry_id: bytes) -> None:
        await self._queue_action("retry", entry_id)

    async def purge(self, entry_id: bytes) -> None:
        await self._queue_action("purge", entry_id)


def install() -> None:
    """Make ``AsyncSession.logon`` beside a running ``mapispool serve`` its client
    (``session.register_client_mode``; the ``mapispool`` package calls this on import)."""
    register_client_mode(DaemonClientSession.attach)
