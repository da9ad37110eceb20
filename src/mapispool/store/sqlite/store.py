"""``SqliteStore``: the ``Store`` interface on one SQLite file (WAL), the embedded default.

Its SQL never runs on the event loop's thread: writes run on a writer thread with its own
connection, in the order they were asked for; reads run on a reader thread with a second
connection (each query sees every write that was awaited before it). Several processes
may open the same store (WAL, busy timeout); one of them at a time may run a spooler on
it (``acquire_spooler_lock``)."""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

from ...mapi import MAPI_E_NO_ACCESS, MAPI_E_NOT_FOUND, MapiError
from ..base import FOLDERS, INLINE_LIMIT, PAGE, QueuePosition, Store
from ..model import Event, QueueEntry, QueueState, Recipient, StoredMessage
from ..types import Claim, Delivery, Outcome, QueueAction, Recorded, Route, Submission
from . import claims, queue, reads, writes
from .database import MEMORY, Database, DbThread
from .group import GroupCommit
from .integrity import check_store, mark_running, mark_stopped
from .queries import Q
from .submits import SubmitGroup

log = logging.getLogger(__name__)

#: How often ``wait_for_work`` looks for another process's commit.
FOREIGN_POLL = 1.0


class SqliteStore(Store):
    """A mapispool store in one SQLite file (or ``":memory:"``, for tests)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (creating and migrating) the store, blocking; ``await
        SqliteStore.open(path)`` does the same off the event loop."""
        self.path = Path(path)
        self._memory = str(self.path) == MEMORY
        self._writer = Database(self.path, migrate_schema=True)
        self._reader = self._writer if self._memory else Database(self.path)
        self._write_thread = DbThread("mapispool-store-writer")
        self._read_thread = (
            self._write_thread if self._memory else DbThread("mapispool-store-reader")
        )
        self._group = GroupCommit(self._writer, self._write_thread)
        self._submits = SubmitGroup(self._writer, self._write_thread)
        self._lock_file: IO[bytes] | None = None
        self._closed = False
        self._unsynced = False
        self._work_lock = threading.Lock()
        self._work_count = 0
        self._work_seen = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._data_version = self._writer_data_version()
        self.integrity_alert: str | None = None

    @classmethod
    async def open(cls, location: str, **options: Any) -> Self:
        return await asyncio.to_thread(cls, location.removeprefix("sqlite://"))

    @property
    def location(self) -> str:
        return str(self.path)

    async def _write(self, fn: Any, *args: Any) -> Any:
        return await self._write_thread.run(fn, self._writer, *args)

    async def _read(self, fn: Any, *args: Any) -> Any:
        return await self._read_thread.run(fn, self._reader, *args)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_blocking)

    def close_blocking(self) -> None:
        """``close`` for callers without an event loop."""
        if self._closed:
            return
        self._closed = True
        self._release_lock()
        self._write_thread.close()
        if self._read_thread is not self._write_thread:
            self._read_thread.close()
        self._writer.close()
        if self._reader is not self._writer:
            self._reader.close()

    # -- the spooler lock -----------------------------------------------------------------

    async def acquire_spooler_lock(self, worker: str = "") -> bool:
        """Take the one-spooler-per-store lock; False if another process holds it.

        The lock file is named after the store's real path (symlinks and ``..``
        resolved), so every name of the same file finds the same lock. A store file with
        a second hard link is refused (``MAPI_E_NO_ACCESS``): the names could not share
        one lock, and SQLite names its WAL after the path, so two names would not share
        a journal."""
        if self._lock_file is not None:
            return True
        handle = await asyncio.to_thread(self._lock)
        if handle is None:
            return False
        self._lock_file = handle
        unclean = mark_running(handle)
        if not self._memory:
            await self._write_thread.run(self._check_integrity, unclean)
        return True

    def _lock(self) -> IO[bytes] | None:
        """The lock file, locked; None when another process holds it."""
        real = Path(os.path.realpath(self.path))
        links = real.stat().st_nlink if real.exists() else 1
        if links > 1:
            raise MapiError(
                MAPI_E_NO_ACCESS,
                f"the store {real} has {links} hard links; a spooler on one name would not "
                "see one on another, and SQLite keeps a journal per name: keep one name "
                "(use a symlink for the others)",
            )
        fd = os.open(f"{real}.lock", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "ab")  # held open for the spooler's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def _check_integrity(self, unclean: bool) -> None:
        """The checks at a spooler's start (``integrity.check_store``); a problem becomes
        ``integrity_alert`` and an error in the log, for the status table to show."""
        try:
            self.integrity_alert, _count = check_store(self._writer.conn, self.path,
                                                       unclean=unclean)  # fmt: skip
        except sqlite3.Error as exc:
            self.integrity_alert = str(self._writer.error(exc, "checking the store").message)
        if self.integrity_alert:
            log.error("%s", self.integrity_alert)

    async def release_spooler_lock(self) -> None:
        self._release_lock()

    def _release_lock(self) -> None:
        """Give the spooler lock back (a clean stop: the next start skips quick_check)."""
        if self._lock_file is not None:
            mark_stopped(self._lock_file)
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- writes ---------------------------------------------------------------------------

    async def submit(
        self,
        content: bytes,
        props: Mapping[int, Any],
        recipients: Sequence[Recipient],
        *,
        submit_time: float,
        not_before: float | None,
        expires_at: float,
        eight_bit: bool = False,
        canonical: bool = False,
    ) -> bytes:
        item = Submission(content, props, recipients, submit_time, not_before, expires_at,
                          eight_bit, canonical)  # fmt: skip
        entry_id = await asyncio.wrap_future(self._submits.submit(item))
        self._wake()
        return entry_id

    def submit_blocking(self, item: Submission) -> bytes:
        """``submit`` for a caller on a thread of its own (the synchronous
        ``Session.submit``): it blocks that thread until the message is durable, and no
        event loop carries the call (the writer thread resolves the caller's future
        directly). Concurrent callers are committed together (``SubmitGroup``)."""
        entry_id = self._submits.submit(item).result()
        self._wake()
        return entry_id

    async def claim(
        self,
        route: Route,
        *,
        now: float,
        limit: int = PAGE,
        lease: float = 300.0,
        worker: str = "",
        ignore_backoff: bool = False,
        submitted_before: float | None = None,
        exclude: Collection[bytes] = (),
        released: Collection[bytes] = (),
        inline_limit: int = INLINE_LIMIT,
    ) -> list[Claim]:
        result: list[Claim] = await self._write_thread.run(
            lambda: claims.claim(
                self._writer, route, now=now, limit=limit, lease=lease, worker=worker,
                ignore_backoff=ignore_backoff, submitted_before=submitted_before,
                exclude=exclude, released=released, inline_limit=inline_limit,
            )
        )  # fmt: skip
        return result

    async def renew(self, claims_: Sequence[Claim], lease: float) -> list[bytes]:
        lost: list[bytes] = await self._write(claims.renew, claims_, lease)
        return lost

    async def release(self, claims_: Sequence[Claim]) -> None:
        await self._write(claims.release, claims_)
        self._wake()

    async def mark_handoff(self, entry_id: bytes, token: int | None, begun: bool) -> None:
        if begun:  # the hot path: committed with the outcomes queued meanwhile
            await self._group.mark(entry_id, token)
        else:
            await self._write(queue.mark_handoff, entry_id, token, begun)

    async def record(self, outcomes: Sequence[Outcome], *, durable: bool = False) -> list[Recorded]:
        results, due = await self._group.record(outcomes, durable)
        if not durable:
            self._unsynced = True
        if due:
            self._wake()
        return list(results)

    async def recover(self, *, parked: bool = True, now: float | None = None) -> dict[str, int]:
        counts: dict[str, int] = await self._write_thread.run(
            lambda: queue.recover(self._writer, parked=parked, before=now)
        )
        return counts

    async def act(
        self, entry_id: bytes, action: QueueAction, *, expires_at: float | None = None
    ) -> QueueState:
        old: QueueState = await self._write_thread.run(
            lambda: queue.act(self._writer, entry_id, action, expires_at=expires_at)
        )
        self._wake()
        return old

    async def deliver(
        self, items: Sequence[Delivery], *, durable: bool = True
    ) -> list[bytes | None]:
        result: list[bytes | None] = await self._write_thread.run(
            lambda: writes.deliver(self._writer, items, durable=durable)
        )
        if not durable:
            self._unsynced = True
        return result

    async def sync(self) -> None:
        """The durability barrier; no fsync when nothing non-durable was written since
        the last one."""
        if not self._unsynced:
            return
        self._unsynced = False
        try:
            await self._write(writes.sync)
        except BaseException:
            self._unsynced = True
            raise

    async def add_dedupe_keys(self, keys: Iterable[str]) -> None:
        await self._write(writes.add_dedupe_keys, list(keys))

    async def set_transport_state(self, transport: str, key: str, value: Any) -> None:
        await self._write(writes.set_transport_state, transport, key, value)

    async def save_status_rows(
        self, rows: Sequence[Mapping[int, Any]], names: Sequence[str], *, worker: str = ""
    ) -> None:
        await self._write(writes.save_status_rows, rows, names, worker)

    async def move_message(self, entry_id: bytes, folder: str) -> None:
        await self._write(writes.move_message, entry_id, folder)

    async def delete_message(self, entry_id: bytes) -> None:
        await self._write(writes.delete_message, entry_id)

    # -- reads ----------------------------------------------------------------------------

    async def known_dedupe_keys(self, keys: Collection[str]) -> set[str]:
        found: set[str] = await self._read(reads.known_dedupe_keys, list(keys))
        return found

    async def get_transport_state(self, transport: str, key: str) -> Any:
        return await self._read(reads.get_transport_state, transport, key)

    async def load_status_rows(self) -> list[dict[int, Any]]:
        rows: list[dict[int, Any]] = await self._read(reads.load_status_rows)
        return rows

    def folder_entry_id(self, name: str) -> bytes:
        try:
            return self._writer.folder_entry_ids[name]
        except KeyError:
            raise MapiError(
                MAPI_E_NOT_FOUND, f"no folder called {name!r}; use one of {FOLDERS}"
            ) from None

    def folder_by_entry_id(self, entry_id: bytes) -> str | None:
        for name, folder_entry_id in self._writer.folder_entry_ids.items():
            if folder_entry_id == entry_id:
                return name
        return None

    async def messages(
        self, folder: str, *, after: int | None = None, limit: int = PAGE
    ) -> list[StoredMessage]:
        found: list[StoredMessage] = await self._read(reads.messages, folder, after, limit)
        return found

    async def message_count(self, folder: str) -> int:
        count: int = await self._read(reads.message_count, folder)
        return count

    async def message(self, entry_id: bytes, *, content: bool = True) -> StoredMessage:
        found: StoredMessage = await self._read(reads.message, entry_id, content)
        return found

    def open_content(self, entry_id: bytes, *, verify: bool = True) -> IO[bytes]:
        if self._memory:
            # One database only: read it whole, on the thread that owns the connection.
            def whole() -> bytes:
                with reads.open_content(_Borrowed(self._writer), entry_id, verify) as stream:
                    return stream.read()

            return io.BytesIO(self._write_thread.run_blocking(whole))
        return reads.open_content(Database(self.path), entry_id, verify)

    async def queue_entry(self, entry_id: bytes, *, with_recipients: bool = True) -> QueueEntry:
        entry: QueueEntry = await self._read(reads.queue_entry, entry_id, with_recipients)
        return entry

    async def queue_page(
        self,
        *,
        states: Collection[QueueState] | None = None,
        after: QueuePosition | None = None,
        limit: int = PAGE,
        with_recipients: bool = True,
    ) -> list[QueueEntry]:
        page: list[QueueEntry] = await self._read(
            reads.queue_page, states, after, limit, with_recipients
        )
        return page

    async def due_entries(
        self,
        now: float,
        *,
        ignore_backoff: bool = False,
        after: QueuePosition | None = None,
        limit: int = PAGE,
    ) -> list[QueueEntry]:
        page: list[QueueEntry] = await self._read(
            reads.due_entries, now, ignore_backoff, after, limit
        )
        return page

    async def _entries(self, query: str, **params: Any) -> list[QueueEntry]:
        page: list[QueueEntry] = await self._read(reads.entries, query, params)
        return page

    async def parked_entries(
        self, transport: str, *, after: QueuePosition | None = None, limit: int = PAGE
    ) -> list[QueueEntry]:
        since_time, since_seq = after if after is not None else (-1.0, -1)
        return await self._entries(
            Q.parked_entries, transport=transport, after_time=since_time, after_seq=since_seq,
            limit=limit,
        )  # fmt: skip

    async def overdue_entries(self, now: float, *, limit: int = PAGE) -> list[QueueEntry]:
        return await self._entries(Q.overdue_entries, now=now, limit=limit)

    async def settled_entries(self, *, limit: int = PAGE) -> list[QueueEntry]:
        return await self._entries(Q.settled_entries, limit=limit)

    async def delayed_entries(self, due_before: float, *, limit: int = PAGE) -> list[QueueEntry]:
        return await self._entries(Q.delayed_entries, due_before=due_before, limit=limit)

    async def pending_types(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = await self._read(reads.pending_types, list(seqs))
        return found

    async def recipient_outcomes(
        self, entry_id: bytes
    ) -> list[tuple[int, str | None, str | None, bool]]:
        found: list[tuple[int, str | None, str | None, bool]] = await self._read(
            reads.recipient_outcomes, entry_id
        )
        return found

    async def next_wakeup(self) -> float | None:
        found: float | None = await self._read(reads.next_wakeup)
        return found

    async def count_by_state(self) -> dict[QueueState, int]:
        found: dict[QueueState, int] = await self._read(reads.count_by_state)
        return found

    async def events(self, entry_id: bytes) -> list[Event]:
        found: list[Event] = await self._read(reads.events, entry_id)
        return found

    # -- waiting for work -----------------------------------------------------------------

    def _wake(self) -> None:
        """Work may be due: wake every ``wait_for_work``, on whatever loop it waits."""
        with self._work_lock:
            self._work_count += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def wait_for_work(self, deadline: float | None) -> bool:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._work_lock:
            if self._work_count != self._work_seen:
                self._work_seen = self._work_count
                return True
            self._waiters.add((loop, event))
        try:
            while True:
                timeout = FOREIGN_POLL
                if deadline is not None:
                    timeout = min(timeout, deadline - time.time())
                    if timeout <= 0:
                        return False
                try:
                    await asyncio.wait_for(event.wait(), timeout)
                except TimeoutError:
                    if await self._foreign_commit():
                        return True
                    continue
                with self._work_lock:
                    self._work_seen = self._work_count
                return True
        finally:
            with self._work_lock:
                self._waiters.discard((loop, event))

    async def _foreign_commit(self) -> bool:
        """True when another process committed since the last look (``PRAGMA
        data_version`` on the writer's connection changes only for other connections'
        commits; the reader connection never writes)."""
        if self._memory:
            return False
        version = await self._write_thread.run(self._writer_data_version)
        changed = version != self._data_version
        self._data_version = version
        return changed

    def _writer_data_version(self) -> int:
        try:
            return int(self._writer.conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._writer.error(exc, "reading the store") from exc


class _Borrowed(Database):
    """A ``Database`` view that does not close the connection it borrows."""

    def __init__(self, db: Database) -> None:
        self.__dict__.update(db.__dict__)

    def close(self) -> None:
        pass
