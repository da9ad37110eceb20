"""``Session``: the synchronous API. It runs an ``AsyncSession`` on an event loop in a
background thread and forwards each call (``Status``, ``Folder`` and ``FlushHandle`` are
the synchronous forms of their async counterparts)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from email.message import Message
from typing import Any, TypeVar

from ..profile import Profile
from ..spooler.engine import Spooler
from ..spooler.flush import FlushResult, ProgressCallback
from ..spooler.status import StatusRow
from ..status_changes import StatusCallback
from ..store import QueueEntry, SqliteStore, Store, StoredMessage
from ..submission import RecipientSpec
from .async_session import AsyncSession
from .folder import AsyncFolder
from .status import AsyncFlushHandle, AsyncStatus

T = TypeVar("T")


class LoopThread:
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

    def __init__(self, handle: AsyncFlushHandle, runner: LoopThread) -> None:
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

    def __init__(self, status: AsyncStatus, runner: LoopThread) -> None:
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

    def __init__(self, folder: AsyncFolder, runner: LoopThread) -> None:
        self._folder = folder
        self._runner = runner
        self.name = folder.name

    def messages(self) -> list[StoredMessage]:
        return self._runner.run(self._folder.messages())

    def count(self) -> int:
        return self._runner.run(self._folder.count())


class Session:
    """The synchronous API: ``with Session.logon(profile) as session: ...``."""

    def __init__(self, inner: AsyncSession, runner: LoopThread) -> None:
        self._inner = inner
        self._runner = runner

    @classmethod
    def logon(cls, profile: Profile | str | os.PathLike[str] | None = None) -> Session:
        """``AsyncSession.logon``: the spooler in this process, or a running daemon's
        client (``mode == "client"``) when ``mapispool serve`` holds the store."""
        runner = LoopThread()
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
        runner = LoopThread()
        try:
            inner = runner.run(AsyncSession.open_async(profile))
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
        props: Mapping[int, Any] | None = None,
    ) -> bytes:
        """``AsyncSession.submit``, done on the caller's thread where it can be: the
        message is checked and put in canonical form here, and on an SQLite store it goes
        straight to the store's writer thread, which fsyncs it (together with what other
        threads submit at the same moment) and answers this thread directly; the
        session's loop is only poked afterwards to wake the spooler, not waited for.
        Returns once the message is durable, as the async form does."""
        inner = self._inner
        store = inner.store
        if not isinstance(store, SqliteStore):
            return self._runner.run(
                inner.submit(
                    message,
                    recipients=recipients,
                    deferred_send_time=deferred_send_time,
                    delete_after_submit=delete_after_submit,
                    sender=sender,
                    props=props,
                )
            )
        item = inner.prepare_submission(
            message,
            recipients=recipients,
            deferred_send_time=deferred_send_time,
            delete_after_submit=delete_after_submit,
            sender=sender,
            props=props,
        )
        entry_id = store.submit_blocking(item)
        if inner.announces_in_process():
            self._runner.loop.call_soon_threadsafe(inner.spooler.queue_changed)
        else:
            self._runner.run(inner.announce_submitted(entry_id))
        return entry_id

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
