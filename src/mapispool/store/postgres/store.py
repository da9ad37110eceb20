"""``PostgresStore``: the ``Store`` interface on PostgreSQL through psycopg 3, for any
number of spoolers (workers) on one queue (DESIGN §9).

* Opening creates or migrates the schema ``store_schema`` (default ``mapispool``) with
  the numbered ``sql/*.sql`` migrations; a schema written by a newer mapispool is refused.
* Each worker registers under a name (default ``host:pid``) and keeps a heartbeat; the
  heartbeat renews the leases of the worker's claims, and repairs the claims of workers
  whose lease ran out (``recover(now=...)``: back to the queue, or ``uncertain`` if their
  hand-over had begun). A dead worker's status rows stop showing.
* ``wait_for_work`` LISTENs for submissions (``submit`` is the only NOTIFY: a NOTIFY
  serialises commits) and polls as a fallback.
* One FlushQueues per store: ``try_flush_lock`` is a session advisory lock, which dies
  with the session of a dead holder, so BUSY is never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self

import psycopg

from ...mapi import MAPI_E_VERSION, MapiError
from ..base import Store
from ..model import QueueState, Recipient, initial_placement
from ..types import Delivery, Outcome, Recorded
from ._plumbing import Conn, log
from ._reads import Reads
from ._record import NOT_DURABLE, HeldClaims
from ._rows import FOLDER_IDS, filed_message
from ._script import Script
from ._sql import SchemaTooNew, migrate, q

#: The schema of a store whose profile names none.
DEFAULT_SCHEMA = "mapispool"

#: How long a worker's claims last without a heartbeat, and how often it beats.
LEASE = 30.0

#: How often ``wait_for_work`` looks at the queue without a notification (the fallback
#: when LISTEN is cut off, and for work that became due without a submission).
POLL = 5.0

_FLUSH_LOCK = 0x4D415049  # 'MAPI': the advisory lock class of "a flush runs on this store"
_LANE_LOCK = 0x4C414E45  # 'LANE': the advisory lock class of a transport's lanes


def default_worker_name() -> str:
    """``host:pid``: unique among live workers on any number of machines."""
    return f"{socket.gethostname()}:{os.getpid()}"


class PostgresStore(Reads, Store):
    """A mapispool store in a PostgreSQL schema; many workers may share it."""

    many_workers: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        schema: str = DEFAULT_SCHEMA,
        password: Callable[[], str | None] = lambda: None,
        *,
        lease: float = LEASE,
    ) -> None:
        super().__init__(url, schema, password)
        self.lease = lease
        self.dead_after = lease
        self.worker_name = ""
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._unsynced = False
        self._closed = False
        self._groups = {}
        self._held = HeldClaims()

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    async def open(cls, location: str, **options: Any) -> Self:
        """Open (creating or migrating) the store at the libpq URL ``location``. Options:
        ``schema`` (default ``mapispool``), ``password`` (a callable returning the
        password or None), ``lease`` (seconds, default 30)."""
        store = cls(
            location,
            options.get("schema") or DEFAULT_SCHEMA,
            options.get("password") or (lambda: None),
            lease=float(options.get("lease", LEASE)),
        )
        try:
            conn = await store.connect(search_path=False)
        except psycopg.Error as exc:
            raise store.error(exc, "opening the store") from exc
        try:
            await migrate(conn, store.schema)
        except SchemaTooNew as exc:
            raise MapiError(MAPI_E_VERSION, f"{store.where}: {exc}") from exc
        except psycopg.Error as exc:
            raise store.error(exc, "creating the store's tables") from exc
        finally:
            await conn.close()
        try:
            await store.open_pool()
        except Exception as exc:
            await store.close_connections()
            raise store.error(exc, "opening the store") from exc
        return store

    @property
    def location(self) -> str:
        return self.where

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(MapiError):
            await self.release_spooler_lock()
        for task in (self._listener, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.close_connections()

    # -- workers ------------------------------------------------------------------------

    async def acquire_spooler_lock(self, worker: str = "") -> bool:
        if self._heartbeat is not None:
            return True
        name = worker or default_worker_name()
        now = time.time()
        async with self.tx("registering the worker") as conn:
            cur = await conn.execute(
                q("register_worker"),
                {"name": name, "host": socket.gethostname(), "pid": os.getpid(), "now": now,
                 "dead_before": now - self.dead_after},
            )  # fmt: skip
            if await cur.fetchone() is None:
                return False
        self.worker_name = name
        self._heartbeat = asyncio.create_task(self._beat(), name=f"mapispool-heartbeat-{name}")
        return True

    async def release_spooler_lock(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(MapiError):
            await self.try_flush_unlock()
        async with self.tx("unregistering the worker") as conn:
            await conn.execute(q("unregister_worker"), {"name": self.worker_name,
                                                        "pid": os.getpid()})  # fmt: skip

    async def heartbeat(self) -> dict[str, int]:
        """One beat: this worker's registration and claims renewed, dead workers'
        expired claims repaired (``recover(now=...)``) and their rows forgotten."""
        now = time.time()
        params = {"name": self.worker_name, "pid": os.getpid(), "now": now}
        # The claims are renewed by one statement in a transaction of its own, which the
        # server commits without waiting for us: its row locks never outlive it. Inside a
        # longer transaction they would be held across an ``await``, while a plug-in's
        # synchronous hand-over mark (the bridge: this loop waits) updates the same row
        # on another connection; each would wait for the other for ever.
        await self.statement("renewing the worker's claims", q("renew_worker_claims"), params)
        async with self.tx("renewing the worker's lease", durable=False) as conn:
            cur = await conn.execute(q("heartbeat"), params)
            if await cur.fetchone() is None:
                await self._register_again(conn, now)
            await conn.execute(q("forget_dead_workers"), {"dead_before": now - self.dead_after})
        return await self.recover(parked=False, now=now)

    async def _register_again(self, conn: Conn, now: float) -> None:
        """This worker's registration is gone: it was paused (or cut off) past its lease
        and a live worker forgot it, taking its claims over. Register again, so that it
        shows among the live workers and its new claims are not taken for a dead
        worker's; unless a live worker took the name meanwhile (then it says so: its
        claims are repaired as a dead worker's, their late writes refused)."""
        cur = await conn.execute(
            q("register_worker"),
            {"name": self.worker_name, "host": socket.gethostname(), "pid": os.getpid(),
             "now": now, "dead_before": now - self.dead_after},
        )  # fmt: skip
        if await cur.fetchone() is None:
            log.warning("worker %s: another live worker now has this name", self.worker_name)
        else:
            log.warning("worker %s: its lease had run out; registered again", self.worker_name)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.heartbeat()
            except MapiError as exc:  # the database is away: keep beating, it comes back
                log.warning("heartbeat failed: %s", exc)

    async def live_workers(self) -> list[dict[str, Any]]:
        """The workers whose heartbeat is recent: name, host, pid, started, last beat."""
        rows = await self.read(
            "reading workers", q("live_workers"), (time.time() - self.dead_after,)
        )
        keys = ("name", "host", "pid", "started_at", "heartbeat_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- one flush per store -------------------------------------------------------------

    async def try_flush_lock(self) -> bool:
        """Take "a FlushQueues runs on this store" for this process; False when another
        session holds it (MAPI_E_BUSY for the caller). Held until ``try_flush_unlock`` or
        the end of this process's session with the database."""
        got = await self.session_query(
            "taking the flush lock",
            q("try_advisory_lock"),
            (_FLUSH_LOCK, self.schema),
        )
        return bool(got)

    async def try_flush_unlock(self) -> None:
        """Give the flush lock back (no-op when not held)."""
        await self.session_query(
            "giving the flush lock back",
            q("advisory_unlock"),
            (_FLUSH_LOCK, self.schema),
        )

    # -- a transport's lanes ----------------------------------------------------------------

    async def try_lane(self, transport: str, lanes: int = 1) -> int | None:
        """Take one of ``transport``'s ``lanes`` for this process: the lane's number, or
        None when other live workers hold them all. One lane (the default) keeps the
        transport's messages in submit order across workers; an inbound transport keeps
        one lane, so one worker at a time reads its mailbox. A lane is held until
        ``release_lane`` or the end of this process's session (a dead worker's lane is
        free at once)."""
        for lane in range(max(lanes, 1)):
            got = await self.session_query(
                "taking a transport's lane",
                q("try_advisory_lock"),
                (_LANE_LOCK, f"{self.schema}:{transport}:{lane}"),
            )
            if got:
                return lane
        return None

    async def release_lane(self, transport: str, lane: int) -> None:
        """Give a lane taken with ``try_lane`` back."""
        await self.session_query(
            "giving a transport's lane back",
            q("advisory_unlock"),
            (_LANE_LOCK, f"{self.schema}:{transport}:{lane}"),
        )

    # -- submitting and inbound -----------------------------------------------------------

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
        state, due_at, expires_at = initial_placement(submit_time, not_before, expires_at)
        entry_id, params = filed_message(
            FOLDER_IDS["Outbox"], content, props, recipients, submit_time,
            ("submitted", state.value), state=state.value, not_before=not_before,
            expires_at=expires_at, due_at=due_at, eight_bit=eight_bit, canonical=canonical,
        )  # fmt: skip
        # One round trip, durable: the message, its queue row, its event and the NOTIFY
        # that wakes idle workers (sent at commit; a deferred message wakes nobody).
        script = Script()
        script.add("BEGIN")
        script.call("file_message", params)
        if state is not QueueState.DEFERRED:
            script.call("notify_submitted", (self.channel,))
        script.add("COMMIT")
        async with self.scripted("submitting a message") as conn:
            await script.run(conn)
        self.wake()
        return entry_id

    async def deliver(
        self, items: Sequence[Delivery], *, durable: bool = True
    ) -> list[bytes | None]:
        """Two round trips: the batch's dedupe keys first (inserting them is the check,
        one statement for the batch, in key order: two workers delivering overlapping
        batches wait for each other in the same order and never deadlock; a key already
        stored inserts nothing), then every new message and the COMMIT."""
        now = time.time()
        for item in items:
            self.folder_id(item.folder)  # an unknown folder fails before anything is written
        keys = sorted({i.dedupe_key for i in items if i.dedupe_key is not None})
        first = Script()
        first.add("BEGIN")
        if not durable:
            first.add(NOT_DURABLE)
        claiming = first.call("claim_dedupe_keys", {"keys": keys, "now": now}) if keys else None
        async with self.scripted("storing received mail") as conn:
            found = await first.run(conn)
            fresh = {str(k) for (k,) in found[claiming] or ()} if claiming is not None else set()
            filing, results = self._filed(items, fresh, now)
            filing.add("COMMIT")
            await filing.run(conn)
        if not durable:
            self._unsynced = True
        return results

    def _filed(
        self, items: Sequence[Delivery], fresh: set[str], now: float
    ) -> tuple[Script, list[bytes | None]]:
        """The statements that store each of ``items`` whose key is in ``fresh`` (or that
        has none), and each item's entry id (None: stored before, or earlier in this
        batch)."""
        script = Script()
        results: list[bytes | None] = []
        for item in items:
            key = item.dedupe_key
            if key is not None and key not in fresh:
                results.append(None)
                continue
            fresh.discard(key or "")
            entry_id, params = filed_message(
                self.folder_id(item.folder), item.content, item.props, item.recipients, now,
                ("received", item.folder), dedupe_key=key,
            )  # fmt: skip
            script.call("file_message", params)
            results.append(entry_id)
        return script, results

    async def sync(self) -> None:
        """A commit that waits for the WAL flush (it has a transaction id), which makes
        every earlier commit of the server durable, unsynchronised ones included."""
        if not self._unsynced:
            return
        async with self.tx("making received mail durable") as conn:
            await conn.execute(q("sync_barrier"))
        self._unsynced = False

    async def record(self, outcomes: Sequence[Outcome], *, durable: bool = False) -> list[Recorded]:
        result = await super().record(outcomes, durable=durable)
        if not durable:
            self._unsynced = True  # ``sync`` makes these durable
        return result

    async def known_dedupe_keys(self, keys: Collection[str]) -> set[str]:
        if not keys:
            return set()
        rows = await self.read("reading dedupe keys", q("known_dedupe_keys"), (list(keys),))
        return {str(k) for (k,) in rows}

    async def add_dedupe_keys(self, keys: Iterable[str]) -> None:
        async with self.tx("recording dedupe keys") as conn:
            await conn.execute(q("add_dedupe_keys"), {"keys": list(keys), "now": time.time()})

    # -- waiting for work -------------------------------------------------------------------

    async def wait_for_work(self, deadline: float | None) -> bool:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="mapispool-listen")
        left = POLL if deadline is None else min(POLL, deadline - time.time())
        if await self.wait_woken(left):
            return True
        # No notification: at the deadline say so; before it, a poll (work may have become
        # due without a submission: a retry's time, another worker's release).
        return deadline is None or time.time() < deadline

    async def _listen(self) -> None:
        """LISTEN on the store's channel; reconnect with backoff when cut off."""
        backoff = 0.5
        while True:
            try:
                conn = await self.connect(search_path=False)
                try:
                    await conn.execute(
                        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self.channel))
                    )
                    self._listening, backoff = True, 0.5
                    self.wake()  # anything submitted while we were not listening
                    async for _note in conn.notifies():
                        self.wake()
                finally:
                    self._listening = False
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
            except (psycopg.Error, OSError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, POLL)
