"""An in-memory ``Store`` for fast tests: the same state machine, claims, fencing tokens,
batches and queries as the durable stores, and no durability at all (``sync`` is a
no-op; every write is "committed" when its call returns, in call order).

``MemoryStore.open("memory:NAME")`` shares its data with every other open store of that
name in the process (the way two processes share one store file: the spooler lock, the
queue and ``wait_for_work`` wake-ups are shared); ``open("")`` or ``open(":memory:")``
gives a private store. The data goes when the last store object on it is gone.
Thread-safe: one lock per store's data, and ``wait_for_work`` may wait on any event loop.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, Self

from ..mapi import PR_SENDER_EMAIL_ADDRESS, MapiError
from .base import INLINE_LIMIT, PAGE, QueuePosition, Store
from .codec import dump_json, dump_props, load_json, load_props
from .memory_data import REGISTRY, Data
from .memory_rows import MessageRow, QueueRow, check_folder, is_due
from .model import (
    Event,
    QueueEntry,
    QueueState,
    Recipient,
    StoredMessage,
    initial_placement,
)
from .types import Claim, Delivery, Outcome, QueueAction, Recorded, Route

_S = QueueState


class MemoryStore(Store):
    """The ``Store`` contract kept in Python objects (see the module docstring)."""

    def __init__(self, data: Data, name: str) -> None:
        self._data = data
        self._name = name
        self._seen = data.waiters.generation
        self.integrity_alert = None

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    async def open(cls, location: str = "", **options: Any) -> Self:
        """A private store for "" or ":memory:"; a shared one for "memory:NAME"."""
        name = location.removeprefix("memory:")
        if name in ("", ":memory:"):
            return cls(Data(), "memory:")
        data = REGISTRY.get(name)
        if data is None:
            data = REGISTRY[name] = Data()
        return cls(data, f"memory:{name}")

    @property
    def location(self) -> str:
        return self._name

    async def close(self) -> None:
        await self.release_spooler_lock()

    async def acquire_spooler_lock(self, worker: str = "") -> bool:
        with self._data.lock:
            if self._data.spooler not in (None, self):
                return False
            self._data.spooler = self
            return True

    async def release_spooler_lock(self) -> None:
        with self._data.lock:
            if self._data.spooler is self:
                self._data.spooler = None

    # -- helpers ----------------------------------------------------------------------

    def _queue(self, accept: Callable[[MessageRow, QueueRow], bool]) -> Iterator[MessageRow]:
        """Queue rows that ``accept`` takes, in submit order."""
        rows = [r for r in self._data.messages.values() if r.queue is not None]
        rows.sort(key=lambda r: r.order)
        return (r for r in rows if r.queue is not None and accept(r, r.queue))

    def _page(
        self,
        accept: Callable[[MessageRow, QueueRow], bool],
        after: QueuePosition | None,
        limit: int,
        with_recipients: bool = False,
    ) -> list[QueueEntry]:
        with self._data.lock:
            rows = self._queue(lambda r, q: (after is None or r.order > after) and accept(r, q))
            return [r.entry(with_recipients=with_recipients) for r in itertools.islice(rows, limit)]

    def _wake(self) -> None:
        self._data.waiters.wake()

    # -- submitting -------------------------------------------------------------------

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
        with self._data.lock:
            row = self._data.new_message(
                "Outbox", content, props, recipients, eight_bit=eight_bit, canonical=canonical
            )
            row.queue = QueueRow(
                state=state,
                submit_time=submit_time,
                not_before=not_before,
                expires_at=expires_at,
                due_at=due_at,
            )
            self._data.log(row.entry_id, "submitted", None, state.value, submit_time)
            self._wake()
        return row.entry_id

    # -- claiming work ----------------------------------------------------------------

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
        def allowed(row: MessageRow, q: QueueRow) -> bool:
            late = submitted_before is not None and q.submit_time > submitted_before
            return not late and row.entry_id not in exclude

        def unparked(row: MessageRow, q: QueueRow) -> bool:
            mine = q.state is _S.PARKED and q.parked_by == route.transport
            return mine and row.entry_id in released and allowed(row, q)

        def due(row: MessageRow, q: QueueRow) -> bool:
            sender = row.props.get(PR_SENDER_EMAIL_ADDRESS) if route.senders else None
            takes = route.for_sender(sender).takes(row.pending_types(), q.declined)
            return is_due(q, now, ignore_backoff) and takes and allowed(row, q)

        claims = []
        with self._data.lock:
            # released parked messages come first, whatever the route
            rows = itertools.chain(self._queue(unparked), self._queue(due))
            for row in itertools.islice(rows, limit):
                assert row.queue is not None
                q = row.queue
                q.claimed_from, q.state = q.state, _S.IN_FLIGHT
                q.token, q.lease_until = self._data.next_token, now + lease
                q.attempts += 1
                self._data.next_token += 1
                self._data.log(row.entry_id, "offered", route.transport, None, time.time())
                claims.append(
                    Claim(
                        entry=row.entry(),
                        props=load_props(dump_props(row.props)),
                        recipients=row.recipient_copies(),
                        content=row.content if len(row.content) <= inline_limit else None,
                        token=q.token,
                        lease_until=q.lease_until,
                        eight_bit=row.eight_bit,
                        canonical=row.canonical,
                        claimed_from=q.claimed_from,
                    )
                )
        return claims

    def _current(self, claim: Claim) -> QueueRow | None:
        row = self._data.messages.get(claim.entry_id)
        q = row.queue if row is not None else None
        return q if q is not None and q.token == claim.token else None

    async def renew(self, claims: Sequence[Claim], lease: float) -> list[bytes]:
        lost = []
        with self._data.lock:
            for claim in claims:
                q = self._current(claim)
                if q is None:
                    lost.append(claim.entry_id)
                else:
                    q.lease_until = claim.lease_until = time.time() + lease
        return lost

    async def release(self, claims: Sequence[Claim]) -> None:
        with self._data.lock:
            for claim in claims:
                q = self._current(claim)
                if q is not None:
                    q.state, q.token, q.lease_until, q.handoff = q.claimed_from, None, None, False
                    q.attempts = max(0, q.attempts - 1)
                    self._data.log(claim.entry_id, "unclaimed", None, None, time.time())
            self._wake()

    async def mark_handoff(self, entry_id: bytes, token: int | None, begun: bool) -> None:
        with self._data.lock:
            _row, q = self._data.queued(entry_id, token)
            q.handoff = begun

    # -- recording outcomes -------------------------------------------------------------

    async def record(self, outcomes: Sequence[Outcome], *, durable: bool = False) -> list[Recorded]:
        results = []
        with self._data.lock:
            for outcome in outcomes:
                try:
                    results.append(self._data.apply(outcome, time.time()))
                except MapiError as exc:  # InvalidTransition and StaleClaim among them
                    results.append(Recorded(error=exc))
        return results

    async def recover(self, *, parked: bool = True, now: float | None = None) -> dict[str, int]:
        with self._data.lock:
            return self._data.recover(parked, now, time.time())

    # -- inbound ------------------------------------------------------------------------

    async def deliver(
        self, items: Sequence[Delivery], *, durable: bool = True
    ) -> list[bytes | None]:
        now = time.time()
        result: list[bytes | None] = []
        with self._data.lock:
            for item in items:
                check_folder(item.folder)
            for item in items:
                key = item.dedupe_key
                if key is not None and key in self._data.dedupe:
                    result.append(None)
                    continue
                entry_id = self._data.file(item, now)
                if key is not None:
                    self._data.dedupe[key] = self._data.messages[entry_id].seq
                result.append(entry_id)
        return result

    async def sync(self) -> None:
        """Nothing to make durable: every write is visible, in order, once it returns."""

    async def known_dedupe_keys(self, keys: Collection[str]) -> set[str]:
        with self._data.lock:
            return {k for k in keys if k in self._data.dedupe}

    async def add_dedupe_keys(self, keys: Iterable[str]) -> None:
        with self._data.lock:
            for key in keys:
                self._data.dedupe.setdefault(key, None)

    # -- transport state and status rows ------------------------------------------------

    async def get_transport_state(self, transport: str, key: str) -> Any:
        with self._data.lock:
            text = self._data.transport_state.get((transport, key))
        return load_json(text) if text is not None else None

    async def set_transport_state(self, transport: str, key: str, value: Any) -> None:
        text = dump_json(value)
        with self._data.lock:
            self._data.transport_state[(transport, key)] = text

    async def save_status_rows(
        self, rows: Sequence[Mapping[int, Any]], names: Sequence[str], *, worker: str = ""
    ) -> None:
        saved = [dump_props(row) for row, _name in zip(rows, names, strict=True)]
        with self._data.lock:
            self._data.status_rows[worker] = saved

    async def load_status_rows(self) -> list[dict[int, Any]]:
        with self._data.lock:
            return [load_props(t) for rows in self._data.status_rows.values() for t in rows]

    # -- folders and messages ------------------------------------------------------------

    def folder_entry_id(self, name: str) -> bytes:
        return self._data.folder_ids[check_folder(name)]

    def folder_by_entry_id(self, entry_id: bytes) -> str | None:
        return next((n for n, i in self._data.folder_ids.items() if i == entry_id), None)

    async def messages(
        self, folder: str, *, after: int | None = None, limit: int = PAGE
    ) -> list[StoredMessage]:
        check_folder(folder)
        with self._data.lock:
            rows = sorted(
                (r for r in self._data.messages.values() if r.folder == folder),
                key=lambda r: r.seq,
            )
            chosen = (r for r in rows if after is None or r.seq > after)
            return [r.stored() for r in itertools.islice(chosen, limit)]

    async def message_count(self, folder: str) -> int:
        check_folder(folder)
        with self._data.lock:
            return sum(1 for r in self._data.messages.values() if r.folder == folder)

    async def message(self, entry_id: bytes, *, content: bool = True) -> StoredMessage:
        with self._data.lock:
            return self._data.row(entry_id).stored(content=content)

    def open_content(self, entry_id: bytes, *, verify: bool = True) -> IO[bytes]:
        """The content from memory (it cannot be damaged there, so ``verify`` finds
        nothing to refuse)."""
        with self._data.lock:
            return io.BytesIO(self._data.row(entry_id).content)

    async def move_message(self, entry_id: bytes, folder: str) -> None:
        check_folder(folder)
        with self._data.lock:
            self._data.row(entry_id).folder = folder
            self._data.log(entry_id, "moved", None, folder, time.time())

    async def delete_message(self, entry_id: bytes) -> None:
        with self._data.lock:
            self._data.row(entry_id)
            del self._data.messages[entry_id]
            self._data.log(entry_id, "deleted", None, None, time.time())

    # -- the outgoing queue: queries -------------------------------------------------------

    async def queue_entry(self, entry_id: bytes, *, with_recipients: bool = True) -> QueueEntry:
        with self._data.lock:
            return self._data.row(entry_id, queued=True).entry(with_recipients=with_recipients)

    async def queue_page(
        self,
        *,
        states: Collection[QueueState] | None = None,
        after: QueuePosition | None = None,
        limit: int = PAGE,
        with_recipients: bool = True,
    ) -> list[QueueEntry]:
        wanted = set(states) if states is not None else set(_S) - {_S.SENT, _S.CANCELLED}
        return self._page(lambda r, q: q.state in wanted, after, limit, with_recipients)

    async def due_entries(
        self,
        now: float,
        *,
        ignore_backoff: bool = False,
        after: QueuePosition | None = None,
        limit: int = PAGE,
    ) -> list[QueueEntry]:
        return self._page(lambda r, q: is_due(q, now, ignore_backoff), after, limit)

    async def parked_entries(
        self, transport: str, *, after: QueuePosition | None = None, limit: int = PAGE
    ) -> list[QueueEntry]:
        return self._page(
            lambda r, q: q.state is _S.PARKED and q.parked_by == transport, after, limit
        )

    async def overdue_entries(self, now: float, *, limit: int = PAGE) -> list[QueueEntry]:
        return self._page(
            lambda r, q: q.state in (_S.QUEUED, _S.RETRY) and q.expires_at <= now, None, limit
        )

    async def settled_entries(self, *, limit: int = PAGE) -> list[QueueEntry]:
        def settled(row: MessageRow, q: QueueRow) -> bool:
            done = all(r.outcome is not None for r in row.recipients)
            return q.state in (_S.QUEUED, _S.RETRY) and done

        return self._page(settled, None, limit)

    async def delayed_entries(self, due_before: float, *, limit: int = PAGE) -> list[QueueEntry]:
        def delayed(_row: MessageRow, q: QueueRow) -> bool:
            waiting = q.state in (_S.QUEUED, _S.RETRY) and q.attempts > 0
            return waiting and not q.delay_notified and q.due_at <= due_before

        return self._page(delayed, None, limit)

    async def pending_types(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        wanted = set(seqs)
        result: dict[int, list[str]] = {seq: [] for seq in seqs}
        with self._data.lock:
            for row in self._data.messages.values():
                if row.seq in wanted:
                    result[row.seq] = row.pending_types()
        return result

    async def recipient_outcomes(
        self, entry_id: bytes
    ) -> list[tuple[int, str | None, str | None, bool]]:
        with self._data.lock:
            rows = self._data.row(entry_id).recipients
            return [(r.recipient.row_id, r.outcome, r.report_text, r.ndr_sent) for r in rows]

    async def next_wakeup(self) -> float | None:
        with self._data.lock:
            times = [
                r.queue.not_before
                for r in self._data.messages.values()
                if r.queue is not None
                and r.queue.state in (_S.DEFERRED, _S.RETRY)
                and r.queue.not_before is not None
            ]
        return min(times, default=None)

    async def count_by_state(self) -> dict[QueueState, int]:
        counts: dict[QueueState, int] = {}
        with self._data.lock:
            for row in self._data.messages.values():
                if row.queue is not None:
                    counts[row.queue.state] = counts.get(row.queue.state, 0) + 1
        return counts

    async def events(self, entry_id: bytes) -> list[Event]:
        with self._data.lock:
            return list(self._data.events.get(entry_id, ()))

    # -- the outgoing queue: a person's actions -------------------------------------------

    async def act(
        self, entry_id: bytes, action: QueueAction, *, expires_at: float | None = None
    ) -> QueueState:
        with self._data.lock:
            return self._data.act(entry_id, action, expires_at, time.time())

    # -- waiting for work ---------------------------------------------------------------

    async def wait_for_work(self, deadline: float | None) -> bool:
        waiters = self._data.waiters
        with self._data.lock:
            if waiters.generation != self._seen:
                self._seen = waiters.generation
                return True
            future = waiters.add(asyncio.get_running_loop())
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            with self._data.lock:
                waiters.discard(future)
                woken = waiters.generation != self._seen
                self._seen = waiters.generation
            return woken
        with self._data.lock:
            self._seen = waiters.generation
        return True
