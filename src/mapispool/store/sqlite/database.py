"""One SQLite connection with the store's settings, its transactions and its error
translation, and the thread that owns it (``DbThread``): every statement of a connection
runs on that connection's own thread, never on the event loop's."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ...mapi import MAPI_E_NOT_ENOUGH_DISK, MAPI_E_NOT_FOUND, MAPI_E_VERSION, MapiError
from ..text import StorableTextConnection
from .errors import describe_open_failure, translate
from .integrity import forget_seq
from .queries import Q
from .schema import SchemaTooNew, migrate

if TYPE_CHECKING:
    import concurrent.futures

T = TypeVar("T")

MEMORY = ":memory:"


def create_file(path: Path) -> None:
    """Create the store file private (mode 600) before SQLite opens it: SQLite gives its
    -wal and -shm files the database file's mode, so no other user ever can read them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # A new store: a .seq file left by a deleted one would report losses.
        forget_seq(path)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)


class Database:
    """An SQLite connection (WAL, foreign keys, ``StorableTextConnection``: no text
    parameter can make a write fail) used by one thread at a time."""

    def __init__(self, path: Path, *, migrate_schema: bool = False) -> None:
        self.path = path
        self._durable = True
        try:
            if str(path) != MEMORY:
                create_file(path)
            self.conn = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False,
                factory=StorableTextConnection,
            )  # fmt: skip
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            if migrate_schema:
                migrate(self.conn)
            self.folder_ids: dict[str, int] = {}
            self.folder_entry_ids: dict[str, bytes] = {}
            for fid, name, entry_id in self.conn.execute(Q.folders):
                self.folder_ids[str(name)] = int(fid)
                self.folder_entry_ids[str(name)] = bytes(entry_id)
            self.folder_names = {fid: name for name, fid in self.folder_ids.items()}
        except SchemaTooNew as exc:
            raise MapiError(MAPI_E_VERSION, f"{path}: {exc}") from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise MapiError(
                    MAPI_E_NOT_ENOUGH_DISK,
                    f"cannot create the store {path}: the disk is full; free space",
                ) from exc
            raise describe_open_failure(
                path, f"cannot create the store {path}", str(exc.strerror)
            ) from exc
        except sqlite3.Error as exc:
            raise translate(exc, "opening the store", path) from exc

    def error(self, exc: sqlite3.Error, what: str) -> MapiError:
        """``exc`` as a ``MapiError`` naming this store, the cause and what to do."""
        return translate(exc, what, self.path)

    def folder_id(self, name: str) -> int:
        try:
            return self.folder_ids[name]
        except KeyError:
            from ..base import FOLDERS  # here: the Store interface is not needed to submit

            raise MapiError(
                MAPI_E_NOT_FOUND, f"no folder called {name!r}; use one of {FOLDERS}"
            ) from None

    @contextmanager
    def tx(self, what: str, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable`` ones (submits, received mail, dedupe keys,
        transport state, a person's actions) are fsync'd at commit (``synchronous =
        FULL``), which also makes every earlier commit durable. The others (the
        spooler's state changes after a durable submit) use ``synchronous = NORMAL``:
        the WAL keeps them through a crash of the process; after a power loss the last
        ones may be lost, which at worst sends a message again (at-least-once)."""
        self._set_sync(durable)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error(exc, what) from exc
        try:
            yield self.conn
        except sqlite3.Error as exc:
            self._rollback()
            raise self.error(exc, what) from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self.error(exc, what) from exc

    def _rollback(self) -> None:
        """Roll back, unless SQLite already did (it does on SQLITE_FULL and SQLITE_IOERR;
        a second ROLLBACK would hide the real error behind 'no transaction is active')."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _set_sync(self, durable: bool) -> None:
        if durable is not self._durable:
            try:
                self.conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            except sqlite3.Error as exc:
                raise self.error(exc, "configuring the store") from exc
            self._durable = durable

    def read(
        self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """All rows of one query (its own implicit transaction)."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.error(exc, "reading the store") from exc

    def message_id(self, entry_id: bytes) -> int:
        rows = self.read(Q.message_id, {"entry_id": entry_id})
        if not rows:
            raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
        return int(rows[0][0])

    def close(self) -> None:
        self.conn.close()


class DbThread:
    """The one thread that runs a connection's work, in the order it was asked for."""

    def __init__(self, name: str) -> None:
        # Imported here, not at the top: ``Database`` alone (the synchronous submit of
        # ``mapispool-sendmail``) must not pay for threads and asyncio.
        import asyncio
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._wrap_future = asyncio.wrap_future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this thread, awaited from any event loop."""
        return await self._wrap_future(self._pool.submit(fn, *args))

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)`` on this thread; its future."""
        return self._pool.submit(fn, *args)

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this thread, waited for by blocking the caller."""
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        """Finish the work already asked for, then stop the thread."""
        self._pool.shutdown(wait=True)
