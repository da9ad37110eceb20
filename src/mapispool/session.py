"""``AsyncSession`` and ``Session``: the client side of mapispool (DESIGN §6).

``AsyncSession`` is the implementation; ``Session`` is a thin synchronous façade that
runs an ``AsyncSession`` on an event loop in a background thread and forwards each call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

from .mapi import (
    MAPI_E_BUSY,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_SUPPORT,
    MAPI_E_NOT_FOUND,
    MAPI_E_UNABLE_TO_ABORT,
    NOTIFY_ABORT_DEFERRED,
    NOTIFY_CANCEL_MESSAGE,
    PR_ENTRYID,
    PR_RESOURCE_METHODS,
    STATUS_FLUSH_QUEUES,
    MapiError,
)
from .profile import Profile
from .spooler.engine import FlushTicket, Spooler
from .spooler.flush import FlushResult, ProgressCallback
from .spooler.status import SPOOLER_ROW, StatusRow
from .status_changes import StatusCallback, StatusChange, advise_table, watch_table
from .store import TRANSITIONS, InvalidTransition, QueueEntry, QueueState, Store, StoredMessage
from .submission import RecipientSpec, prepare

T = TypeVar("T")
log = logging.getLogger("mapispool.session")


def default_profile_path() -> Path:
    """``$MAPISPOOL_PROFILE``, else ``profile.toml`` in the user's config directory."""
    if "MAPISPOOL_PROFILE" in os.environ:
        return Path(os.environ["MAPISPOOL_PROFILE"])
    from platformdirs import user_config_path

    return user_config_path("mapispool") / "profile.toml"


def _load_profile(profile: Profile | str | os.PathLike[str] | None) -> Profile:
    if isinstance(profile, Profile):
        return profile
    return Profile.load(default_profile_path() if profile is None else profile)


_STORE_ONLY = (
    "this session was opened on the store alone (open()), so no spooler runs in it; "
    "use logon() to flush (it reaches a running 'mapispool serve' too)"
)


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
        self._spooler.check_flush(flags & ~0x20, None)
        self._spooler.request_transport_flush(self._spooler.handle_named(self.name), flags)
        return None

    async def validate_state(self, flags: int = 0) -> None:
        """IMAPIStatus::ValidateState: the spooler's asks every transport; a transport's
        object asks that transport."""
        self._check_available()
        names = [h.name for h in self._spooler.handles] if self.is_spooler else [self.name]
        for name in names:
            handle = self._spooler.handle_named(name)
            if handle.logged_on:
                await handle.call(lambda logon: logon.validate_state(flags))

    async def settings_dialog(self, flags: int = 0) -> None:
        raise MapiError(MAPI_E_NO_SUPPORT, "there is no settings dialog; edit the profile")

    async def change_password(self, old: str, new: str, flags: int = 0) -> None:
        raise MapiError(MAPI_E_NO_SUPPORT, "passwords live outside mapispool's profile")


class AsyncFolder:
    """A folder of the store (Outbox, Inbox, Sent Items, Deleted Items)."""

    def __init__(self, store: Store, name: str) -> None:
        store.folder_entry_id(name)  # raises MAPI_E_NOT_FOUND for unknown names
        self._store = store
        self.name = name

    async def messages(self) -> list[StoredMessage]:
        """Every message in the folder, oldest first."""
        return self._store.messages(self.name)

    async def count(self) -> int:
        return self._store.message_count(self.name)

    @property
    def entry_id(self) -> bytes:
        return self._store.folder_entry_id(self.name)


def _not_allowed(
    entry_id: bytes,
    action: str,
    state: QueueState,
    new: QueueState,
    expect: Sequence[QueueState] | None,
) -> MapiError:
    """The error for a queue action the message's state does not allow, e.g. ``cannot
    hold message 3fa2...: it is sent (hold applies to messages that are queued, deferred,
    retry or parked)``."""
    where = [
        s.value.replace("_", " ")
        for s in QueueState
        if new in TRANSITIONS[s] and s is not QueueState.IN_FLIGHT
        and (expect is None or s in expect)
    ]  # fmt: skip
    now = "being sent right now" if state is QueueState.IN_FLIGHT else state.value
    states = where[0] if len(where) == 1 else f"{', '.join(where[:-1])} or {where[-1]}"
    return MapiError(
        MAPI_E_INVALID_PARAMETER,
        f"cannot {action} message {entry_id.hex()}: it is {now}"
        f" ({action} applies to messages that are {states})",
    )


class AsyncSession:
    """A logged-on session. Use ``await AsyncSession.logon()`` (or ``open()``).

    ``mode`` says where its spooler is: ``"spooler"`` (started in this process by
    ``logon``), ``"client"`` (a running ``mapispool serve``'s: ``logon`` attached to it,
    see ``daemon.attached``) or ``"store"`` (none: ``open``)."""

    def __init__(
        self, profile: Profile, store: Store, spooler: Spooler, *, spooler_running: bool = True
    ) -> None:
        self.profile = profile
        self.store = store
        self.spooler = spooler
        self.spooler_running = spooler_running
        self._closed = False

    @classmethod
    async def logon(
        cls, profile: Profile | str | os.PathLike[str] | None = None, *, attach: bool = True
    ) -> AsyncSession:
        """Load the profile, open the store and start the spooler (transports log on).

        When another process runs the store's spooler and it is a ``mapispool serve`` of
        this user (its control socket answers), the session is that daemon's client
        (``mode == "client"``) unless ``attach`` is False; other spoolers (a running
        ``mapispool flush``, another program's session) give ``MAPI_E_BUSY``."""
        loaded = _load_profile(profile)
        store = Store(loaded.store_path())
        spooler = Spooler(loaded, store)
        try:
            await spooler.start()
        except MapiError as exc:
            busy = exc.hresult == MAPI_E_BUSY
            client = await cls._attach(loaded, store) if busy and attach else None
            if client is None:
                store.close()
                raise
            return client
        except BaseException:
            store.close()
            raise
        return cls(loaded, store, spooler)

    @staticmethod
    async def _attach(profile: Profile, store: Store) -> AsyncSession | None:
        from .daemon.attached import DaemonClientSession  # the daemon package imports us

        return await DaemonClientSession.attach(profile, store)

    @classmethod
    def open(cls, profile: Profile | str | os.PathLike[str] | None = None) -> AsyncSession:
        """A session on the store alone: no spooler runs and no transport logs on.

        Enough to submit, list and manage the queue and read folders while another process
        (a daemon) runs the spooler, or before one starts: submitted mail waits in the
        store. ``spooler_status().flush_queues`` is not available on such a session."""
        loaded = _load_profile(profile)
        store = Store(loaded.store_path())
        return cls(loaded, store, Spooler(loaded, store), spooler_running=False)

    @property
    def mode(self) -> str:
        """``"spooler"``, ``"client"`` or ``"store"`` (see the class docstring)."""
        return "spooler" if self.spooler_running else "store"

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.logoff()

    async def submit(
        self,
        message: Message | bytes,
        *,
        recipients: Sequence[RecipientSpec] | None = None,
        deferred_send_time: datetime | None = None,
        delete_after_submit: bool = False,
        sender: str | None = None,
    ) -> bytes:
        """Queue a message; returns its entry id. Recipients are ``"TYPE:address"`` or bare
        addresses (SMTP); None takes them from the To/Cc/Bcc headers. The message and its
        queue entry are written in one transaction before this returns."""
        now = datetime.now(UTC)
        prepared = prepare(
            message,
            recipients=recipients,
            now=now,
            deferred_send_time=deferred_send_time,
            delete_after_submit=delete_after_submit,
            sender=sender,
        )
        submit_time = time.time()
        not_before = deferred_send_time.timestamp() if deferred_send_time is not None else None
        entry_id = self.store.submit(
            prepared.content,
            prepared.props,
            prepared.recipients,
            submit_time=submit_time,
            not_before=not_before,
            expires_at=submit_time + self.profile.retry.lifetime,
        )
        await self._announce_submitted(entry_id)
        return entry_id

    async def _announce_submitted(self, entry_id: bytes) -> None:
        """Tell what sends this session's mail that ``entry_id`` was queued: the
        in-process spooler here; the daemon in client mode (``daemon.attached``)."""
        self.spooler.queue_changed()

    async def status_table(self) -> list[StatusRow]:
        """Every status row: the spooler's first, then one per transport in order."""
        return list(self.spooler.status.rows())

    def status_changes(self) -> AsyncIterator[StatusChange]:
        """MAPI's Advise on the status table: every row change from the iterator's first
        step on, as ``StatusChange(name, row)``; leave the ``async for`` to stop."""
        return watch_table(self.spooler.status)

    def advise_status(self, callback: StatusCallback) -> Callable[[], None]:
        """The callback form of ``status_changes`` (called on the session's loop);
        returns the Unadvise function."""
        return advise_table(self.spooler.status, callback)

    def spooler_status(self) -> AsyncStatus:
        """The spooler's status object (where Send/Receive is asked for)."""
        if not self.spooler_running:
            return AsyncStatus(self.spooler, SPOOLER_ROW, unavailable=_STORE_ONLY)
        return AsyncStatus(self.spooler, SPOOLER_ROW)

    def open_status(self, entry_id: bytes) -> AsyncStatus:
        """The status object of the row with this ``PR_ENTRYID``."""
        name = self.spooler.status.find(bytes(entry_id))
        if name is None:
            raise MapiError(
                MAPI_E_NOT_FOUND, f"no status row with entry id {bytes(entry_id).hex()}"
            )
        return AsyncStatus(self.spooler, name)

    def folder(self, name: str) -> AsyncFolder:
        return AsyncFolder(self.store, name)

    async def outgoing_queue(self) -> list[QueueEntry]:
        """Every submitted message not yet finished, in submit order."""
        return self.store.outgoing_queue()

    async def queue_entry(self, entry_id: bytes) -> QueueEntry:
        return self.store.queue_entry(entry_id)

    # -- queue management ---------------------------------------------------------------

    async def cancel(self, entry_id: bytes) -> None:
        """Cancel a queued message (moved to Deleted Items). A message a transport deferred
        is taken back with ``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``."""
        entry = self.store.queue_entry(entry_id)
        if entry.state is QueueState.IN_FLIGHT:
            raise MapiError(MAPI_E_UNABLE_TO_ABORT, "the message is being sent right now")
        await self._take_back_parked(entry)
        with self._explained(entry_id, "cancel", QueueState.CANCELLED):
            self.store.finish(entry_id, QueueState.CANCELLED, folder="Deleted Items")

    async def hold(self, entry_id: bytes) -> None:
        """Keep a queued message from being sent until ``release``. A message a transport
        deferred is taken back first (``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``)."""
        entry = self.store.queue_entry(entry_id)
        await self._take_back_parked(entry)
        with self._explained(entry_id, "hold", QueueState.HELD):
            self.store.transition(entry_id, QueueState.HELD, event="held")

    async def release(self, entry_id: bytes) -> None:
        """Let a held message go again."""
        with self._explained(entry_id, "release", QueueState.QUEUED, [QueueState.HELD]):
            self.store.transition(
                entry_id, QueueState.QUEUED, expect=[QueueState.HELD], event="released"
            )
        self.spooler.queue_changed()

    async def retry(self, entry_id: bytes) -> None:
        """Send again now: a message waiting for its backoff, uncertain, or failed (its
        failed recipients are tried again, with a new lifetime)."""
        allowed = [QueueState.RETRY, QueueState.UNCERTAIN, QueueState.FAILED, QueueState.DEFERRED]
        if self.store.queue_entry(entry_id).state is QueueState.FAILED:
            self.store.reopen_failed(entry_id, time.time() + self.profile.retry.lifetime)
        with self._explained(entry_id, "retry", QueueState.QUEUED, allowed):
            self.store.transition(
                entry_id, QueueState.QUEUED, expect=allowed, event="retry-requested"
            )
        self.spooler.outbound.settle(entry_id)  # nothing left to send: finish it now
        self.spooler.queue_changed()

    async def purge(self, entry_id: bytes) -> None:
        """Delete a message that is not being sent, for good. A message a transport
        deferred is taken back first (``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``)."""
        entry = self.store.queue_entry(entry_id)
        if entry.state is QueueState.IN_FLIGHT:
            raise MapiError(MAPI_E_UNABLE_TO_ABORT, "the message is being sent right now")
        await self._take_back_parked(entry)
        self.store.purge(entry_id)

    async def _take_back_parked(self, entry: QueueEntry) -> None:
        """Before a hold, purge or cancel of a message a transport holds (END_DONT_RESEND):
        tell that transport, ``NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE``. The
        person's request goes ahead whatever the transport answers."""
        if entry.state is not QueueState.PARKED or not entry.parked_by:
            return
        try:
            handle = self.spooler.handle_named(entry.parked_by)
        except MapiError:
            return  # the transport is no longer in the profile: nobody to tell
        handle.released.discard(entry.entry_id)
        if handle.logon is None:
            return
        try:
            await handle.logon.transport_notify(
                NOTIFY_ABORT_DEFERRED | NOTIFY_CANCEL_MESSAGE, entry.entry_id
            )
        except Exception:
            log.exception("transport %s failed to give back %s", handle.name, entry.entry_id.hex())

    @contextlib.contextmanager
    def _explained(
        self,
        entry_id: bytes,
        action: str,
        new: QueueState,
        expect: Sequence[QueueState] | None = None,
    ) -> Iterator[None]:
        """A queue action the message's state does not allow becomes a one-line
        ``MapiError`` (MAPI_E_INVALID_PARAMETER) saying what the state is and where the
        action applies, never the store's internal ``InvalidTransition``."""
        try:
            yield
        except InvalidTransition:
            state = self.store.queue_entry(entry_id, with_recipients=False).state
            raise _not_allowed(entry_id, action, state, new, expect) from None

    async def logoff(self) -> None:
        """Stop the spooler (a flush in progress ends cleanly) and close the store."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.spooler_running:
                await self.spooler.shutdown()
        finally:
            self.store.close()


# -- the synchronous façade ----------------------------------------------------------------


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mapispool", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class FlushHandle:
    """The synchronous form of ``AsyncFlushHandle``."""

    def __init__(self, handle: AsyncFlushHandle, runner: _LoopThread) -> None:
        self._handle = handle
        self._runner = runner

    @property
    def done(self) -> bool:
        return self._handle.done

    @property
    def result(self) -> FlushResult | None:
        return self._handle.result

    def wait(self, timeout: float | None = None) -> FlushResult:
        """Block until the flush ends; ``TimeoutError`` after ``timeout`` seconds."""
        future = self._runner.submit(self._handle.wait())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TimeoutError("the flush is still running") from exc


class Status:
    """The synchronous form of ``AsyncStatus``."""

    def __init__(self, status: AsyncStatus, runner: _LoopThread) -> None:
        self._status = status
        self._runner = runner
        self.name = status.name

    @property
    def row(self) -> StatusRow:
        return self._runner.call(lambda: self._status.row)

    @property
    def entry_id(self) -> bytes:
        return self._runner.call(lambda: self._status.entry_id)

    def flush_queues(
        self,
        flags: int,
        target: bytes | None = None,
        progress: ProgressCallback | None = None,
        *,
        wait: bool = False,
    ) -> FlushResult | FlushHandle | None:
        outcome = self._runner.run(self._status.flush_queues(flags, target, progress, wait=wait))
        if isinstance(outcome, AsyncFlushHandle):
            return FlushHandle(outcome, self._runner)
        return outcome

    def validate_state(self, flags: int = 0) -> None:
        self._runner.run(self._status.validate_state(flags))

    def settings_dialog(self, flags: int = 0) -> None:
        self._runner.run(self._status.settings_dialog(flags))

    def change_password(self, old: str, new: str, flags: int = 0) -> None:
        self._runner.run(self._status.change_password(old, new, flags))


class Folder:
    """The synchronous form of ``AsyncFolder``."""

    def __init__(self, folder: AsyncFolder, runner: _LoopThread) -> None:
        self._folder = folder
        self._runner = runner
        self.name = folder.name

    def messages(self) -> list[StoredMessage]:
        return self._runner.run(self._folder.messages())

    def count(self) -> int:
        return self._runner.run(self._folder.count())


class Session:
    """The synchronous API: ``with Session.logon(profile) as session: ...``."""

    def __init__(self, inner: AsyncSession, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner

    @classmethod
    def logon(cls, profile: Profile | str | os.PathLike[str] | None = None) -> Session:
        """``AsyncSession.logon``: the spooler in this process, or a running daemon's
        client (``mode == "client"``) when ``mapispool serve`` holds the store."""
        runner = _LoopThread()
        try:
            inner = runner.run(AsyncSession.logon(profile))
        except BaseException:
            runner.stop()
            raise
        return cls(inner, runner)

    @classmethod
    def open(cls, profile: Profile | str | os.PathLike[str] | None = None) -> Session:
        """``AsyncSession.open``: the store alone (``mode == "store"``); no spooler runs
        and no transport logs on, and ``flush_queues`` is not available."""
        runner = _LoopThread()
        try:
            inner = runner.call(lambda: AsyncSession.open(profile))
        except BaseException:
            runner.stop()
            raise
        return cls(inner, runner)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.logoff()

    @property
    def profile(self) -> Profile:
        return self._inner.profile

    @property
    def mode(self) -> str:
        """``"spooler"``, ``"client"`` or ``"store"`` (see ``AsyncSession``)."""
        return self._inner.mode

    @property
    def spooler(self) -> Spooler:
        return self._inner.spooler

    @property
    def store(self) -> Store:
        return self._inner.store

    def call(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``fn(async_session)`` on the session's loop (for async-only extras)."""

        async def run() -> T:
            return await fn(self._inner)

        return self._runner.run(run())

    def submit(
        self,
        message: Message | bytes,
        *,
        recipients: Sequence[RecipientSpec] | None = None,
        deferred_send_time: datetime | None = None,
        delete_after_submit: bool = False,
        sender: str | None = None,
    ) -> bytes:
        return self._runner.run(
            self._inner.submit(
                message,
                recipients=recipients,
                deferred_send_time=deferred_send_time,
                delete_after_submit=delete_after_submit,
                sender=sender,
            )
        )

    def status_table(self) -> list[StatusRow]:
        return self._runner.run(self._inner.status_table())

    def advise_status(self, callback: StatusCallback) -> Callable[[], None]:
        """``AsyncSession.advise_status``: ``callback`` runs on the session's thread."""
        unadvise = self._runner.call(lambda: self._inner.advise_status(callback))
        return lambda: self._runner.call(unadvise)

    def spooler_status(self) -> Status:
        return Status(self._inner.spooler_status(), self._runner)

    def open_status(self, entry_id: bytes) -> Status:
        return Status(self._runner.call(lambda: self._inner.open_status(entry_id)), self._runner)

    def folder(self, name: str) -> Folder:
        return Folder(self._runner.call(lambda: self._inner.folder(name)), self._runner)

    def outgoing_queue(self) -> list[QueueEntry]:
        return self._runner.run(self._inner.outgoing_queue())

    def queue_entry(self, entry_id: bytes) -> QueueEntry:
        return self._runner.run(self._inner.queue_entry(entry_id))

    def cancel(self, entry_id: bytes) -> None:
        self._runner.run(self._inner.cancel(entry_id))

    def hold(self, entry_id: bytes) -> None:
        self._runner.run(self._inner.hold(entry_id))

    def release(self, entry_id: bytes) -> None:
        self._runner.run(self._inner.release(entry_id))

    def retry(self, entry_id: bytes) -> None:
        self._runner.run(self._inner.retry(entry_id))

    def purge(self, entry_id: bytes) -> None:
        self._runner.run(self._inner.purge(entry_id))

    def logoff(self) -> None:
        try:
            self._runner.run(self._inner.logoff())
        finally:
            self._runner.stop()
