"""Connections of the PostgreSQL store: a small pool for queries, one session connection
for what lives as long as a session (the worker's advisory locks) and one that LISTENs for
submissions. Transactions, error translation and the in-process wake-up live here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from ...mapi import MapiError
from ._errors import public_url, translate
from ._text import STORE_ADAPTERS

log = logging.getLogger("mapispool.store.postgres")

Conn = AsyncConnection[Any]

#: How long a command waits for a connection (and libpq for a TCP connect) before the
#: store reports the database unreachable (MAPI_E_NETWORK_ERROR, exit 75).
CONNECT_TIMEOUT = 10.0

#: A connection kept for another thread's event loop is pinged before use when it has
#: been idle this long (seconds): one that a server restart broke is then replaced.
FOREIGN_IDLE_CHECK = 1.0

#: A pooled connection is pinged at checkout when it was given back longer ago than this
#: (seconds). A server restart within that time surfaces as the next query's error (the
#: worker retries it; a command exits 75), never as a lost write.
POOL_IDLE_CHECK = 1.0


class _Foreign:
    """The connection kept for one event loop other than the store's own (the spooler's
    bridge thread writes every hand-over mark from one): a new connection per call would
    cost a connect and a server process per message. Calls from that loop take turns."""

    def __init__(self) -> None:
        self.conn: Conn | None = None
        self.lock = asyncio.Lock()
        self.used = 0.0

    def finish(self) -> None:
        """Close the connection without its loop (gone, or not ours to run)."""
        conn, self.conn = self.conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()


class Plumbing:
    """Owns the connections; every query of the store goes through ``tx`` or ``read``."""

    def __init__(self, url: str, schema: str, password: Callable[[], str | None]) -> None:
        self.url = url
        self.schema = schema
        self._password = password
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._session: Conn | None = None
        self._session_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        #: The loop that opened the store: its pool lives there. A coroutine awaited on
        #: another thread's loop (the spooler's bridge, a plug-in's synchronous Support
        #: call) uses the connection kept for that loop instead (base.py: "any loop").
        self._home: asyncio.AbstractEventLoop | None = None
        self._foreign: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Foreign] = (
            weakref.WeakKeyDictionary()
        )
        self._foreign_guard = threading.Lock()
        #: When each pooled connection was last given back (``_check_idle``).
        self._returned: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._where = f"{public_url(url)} (schema {schema})"
        self.channel = f"mapispool_{schema}"[:63]

    @property
    def where(self) -> str:
        return self._where

    def error(self, exc: BaseException, what: str) -> MapiError:
        return translate(exc, what, self._where)

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": int(CONNECT_TIMEOUT),
            "application_name": "mapispool",
            "context": STORE_ADAPTERS,  # no text a server or a file sends fails a write
            # psycopg's own prepared statements off: it deallocates every prepared
            # statement of a connection after any rollback on it, the store's own
            # (``_script.PREPARED``) included.
            "prepare_threshold": None,
        }
        password = self._password()
        if password is not None:
            kwargs["password"] = password
        return kwargs

    async def connect(self, *, search_path: bool = True) -> Conn:
        """A new connection of our own (migrations, the session and LISTEN connections)."""
        conn = await AsyncConnection.connect(self.url, **self.connect_kwargs())
        if search_path:
            await self._configure(conn)
        return conn

    async def _configure(self, conn: Conn) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    async def open_pool(self, max_size: int = 4) -> None:
        self._home = asyncio.get_running_loop()
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=max_size,
            kwargs=self.connect_kwargs(),
            configure=self._configure,
            # A connection broken by a server restart is found out at checkout, not by the
            # query that would fail on it; one given back moments ago is not asked again
            # (the ping was a round trip per transaction).
            check=self._check_idle,
            reset=self._given_back,
            timeout=CONNECT_TIMEOUT,
            reconnect_timeout=0,  # keep trying forever: workers ride out an outage
            open=False,
            name=f"mapispool-{self.schema}",
        )
        await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)

    async def _check_idle(self, conn: Conn) -> None:
        """The pool's check at checkout: ping a connection idle for over
        ``POOL_IDLE_CHECK`` seconds; raise if it is broken (the pool then replaces it)."""
        if time.monotonic() - self._returned.get(conn, 0.0) > POOL_IDLE_CHECK:
            await AsyncConnectionPool.check_connection(conn)

    async def _given_back(self, conn: Conn) -> None:
        self._returned[conn] = time.monotonic()

    async def close_connections(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(psycopg.Error):
                await session.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        with self._foreign_guard:
            foreign = [(loop, slot.conn) for loop, slot in self._foreign.items() if slot.conn]
            self._foreign.clear()
        for loop, conn in foreign:
            _close_on(loop, conn)

    @asynccontextmanager
    async def tx(self, what: str, *, durable: bool = True) -> AsyncIterator[Conn]:
        """One transaction on a pooled connection. Not ``durable``: committed with
        ``synchronous_commit = off``, so it survives a crash of this process (the server
        has it) but a crash of the server may lose it until a later durable commit."""
        if self._pool is None:
            raise self.error(psycopg.InterfaceError("the store is closed"), what)
        try:
            async with self._connection() as conn, conn.transaction():
                if not durable:
                    await conn.execute("SET LOCAL synchronous_commit = off")
                yield conn
        except MapiError:
            raise
        except (psycopg.Error, OSError) as exc:  # PoolTimeout is an OperationalError
            raise self.error(exc, what) from exc

    @asynccontextmanager
    async def scripted(self, what: str) -> AsyncIterator[Conn]:
        """A connection for statements that manage their own transaction (a ``Script``
        with BEGIN ... COMMIT). A transaction still open after a failure is rolled back
        before the connection is given back."""
        if self._pool is None:
            raise self.error(psycopg.InterfaceError("the store is closed"), what)
        try:
            async with self._connection() as conn:
                try:
                    yield conn
                except BaseException:
                    await _roll_back(conn)
                    raise
        except MapiError:
            raise
        except (psycopg.Error, OSError) as exc:
            raise self.error(exc, what) from exc

    async def statement(self, what: str, query: Any, params: Any = None) -> None:
        """Run one statement as a transaction of its own (the pool's connections are in
        autocommit): the server commits it as soon as it ran, whatever this process does
        next, so that its locks never wait on this process's event loop."""
        if self._pool is None:
            raise self.error(psycopg.InterfaceError("the store is closed"), what)
        try:
            async with self._connection() as conn:
                await conn.execute(query, params)
        except MapiError:
            raise
        except (psycopg.Error, OSError) as exc:
            raise self.error(exc, what) from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        if self._pool is not None and asyncio.get_running_loop() is self._home:
            async with self._pool.connection() as conn:
                yield conn
            return
        loop = asyncio.get_running_loop()
        with self._foreign_guard:
            slot = self._foreign.get(loop)
            if slot is None:
                slot = self._foreign[loop] = _Foreign()
                # A loop that ends (asyncio.run in a plug-in's call) takes its connection along.
                weakref.finalize(loop, slot.finish)
        async with slot.lock:
            kept: Conn | None = slot.conn
            if kept is not None and (kept.closed or kept.broken):
                kept = None
            if kept is not None and time.monotonic() - slot.used > FOREIGN_IDLE_CHECK:
                try:
                    await AsyncConnectionPool.check_connection(kept)
                except psycopg.Error:
                    await _quietly_close(kept)
                    kept = None
            if kept is None:
                kept = slot.conn = await self.connect()
            try:
                yield kept
            except BaseException:
                # Its state is unknown after a failure (a cancelled query): start afresh.
                slot.conn = None
                await _quietly_close(kept)
                raise
            finally:
                slot.used = time.monotonic()

    async def read(self, what: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of one read-only query."""
        async with self.tx(what) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    # -- the session connection (advisory locks live as long as it does) --------------

    async def session_query(self, what: str, query: Any, params: Any = None) -> Any:
        """The first column of the first row of ``query`` run on the session connection,
        opened on first use. Its advisory locks die with it: a dead worker holds none."""
        async with self._session_lock:
            try:
                if self._session is None or self._session.closed:
                    self._session = await self.connect()
                cur = await self._session.execute(query, params)
                row = await cur.fetchone()
                return row[0] if row else None
            except (psycopg.Error, OSError) as exc:
                if self._session is not None and self._session.broken:
                    self._session = None
                raise self.error(exc, what) from exc

    # -- waking ------------------------------------------------------------------------

    def wake(self) -> None:
        """Wake this process's ``wait_for_work`` (work became due through it); safe from
        any thread."""
        home = self._home
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if home is None or running is home:
            self._wake.set()
        elif not home.is_closed():
            home.call_soon_threadsafe(self._wake.set)

    async def wait_woken(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``wake``; True when woken (the flag is consumed)."""
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._wake.wait()
        except TimeoutError:
            return False
        self._wake.clear()
        return True


async def _roll_back(conn: Conn) -> None:
    """End the transaction a failed script left open (the connection's state otherwise
    decides: a broken one is dropped by its owner)."""
    status = conn.info.transaction_status
    if conn.closed or status not in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        return
    with contextlib.suppress(psycopg.Error, OSError):
        await conn.execute("ROLLBACK")


async def _quietly_close(conn: Conn) -> None:
    with contextlib.suppress(psycopg.Error, OSError):
        await conn.close()


def _close_on(loop: asyncio.AbstractEventLoop, conn: Conn) -> None:
    """Close ``conn``, which belongs to ``loop``: on that loop if it still runs (waiting
    briefly), else by closing its libpq connection directly."""
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if loop.is_running() and not loop.is_closed() and loop is not current:
        future = asyncio.run_coroutine_threadsafe(_quietly_close(conn), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=2.0)
            return
    if not conn.closed:
        conn.pgconn.finish()
