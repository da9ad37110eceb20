"""The outgoing queue across workers: claims under a lease with a fencing token, the
hand-over mark, outcomes in one transaction and the repair of dead workers' claims.

A claim locks a page of waiting rows with ``FOR UPDATE SKIP LOCKED``: two workers claiming
at once each get different rows and never wait for each other. Every write tied to a claim
checks its token under the row lock, so a worker that lost its lease (paused, cut off)
has its late writes refused with ``StaleClaim``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg

from ...mapi import MAPI_E_CALL_FAILED, MAPI_E_NOT_FOUND, PR_SENDER_EMAIL_ADDRESS, MapiError
from ..base import FOLDERS, INLINE_LIMIT, PAGE
from ..codec import dump_props, load_props
from ..model import (
    TRANSITIONS,
    InvalidTransition,
    QueueState,
    Recipient,
    StaleClaim,
    recovered_state,
)
from ..text import storable
from ..types import Claim, Outcome, Recorded, Route
from ._group import GroupCommit, Job
from ._plumbing import Conn, Plumbing
from ._rows import (
    FOLDER_IDS,
    add_event,
    checked_inline,
    insert_message,
    queue_entry,
    recipient_from_row,
)
from ._sql import q

_DUE = frozenset({QueueState.QUEUED, QueueState.RETRY, QueueState.DEFERRED})

#: The props key of PR_SENDER_EMAIL_ADDRESS (props are stored as JSON keyed by tag).
_SENDER_KEY = str(int(PR_SENDER_EMAIL_ADDRESS))


def _takes(route: Route, sender: str | None, pending: Any, declined: Any) -> bool:
    """``route`` takes a message with these pending address types (for its sender, when
    the route chooses transports by sender: ``Store.claim``)."""
    return route.for_sender(sender).takes(pending, declined or ())


class Outbound(Plumbing):
    """Claims, outcomes and recovery (mixed into ``PostgresStore``)."""

    worker_name: str = ""
    dead_after: float = 30.0
    lease: float = 30.0
    #: The group commits (``_grouped``), made on first use.
    _groups: dict[str, GroupCommit]

    async def claim(
        self,
        route: Route,
        *,
        now: float,
        limit: int = PAGE,
        lease: float | None = None,  # None: the store's lease (the profile's store_lease)
        worker: str = "",
        ignore_backoff: bool = False,
        submitted_before: float | None = None,
        exclude: Collection[bytes] = (),
        released: Collection[bytes] = (),
        inline_limit: int = INLINE_LIMIT,
    ) -> list[Claim]:
        worker = worker or self.worker_name
        # The spooler names no lease: a claim lasts the store's, which a dead or paused
        # worker's claims outlive before a live worker takes them over.
        lease = self.lease if lease is None else lease
        if limit <= 0:
            return []
        async with self.tx("claiming queued messages", durable=False) as conn:
            chosen: list[int] = []
            if released:
                cur = await conn.execute(
                    q("claim_released"),
                    {"transport": route.transport, "released": list(released),
                     "submitted_before": submitted_before, "exclude": list(exclude),
                     "sender_key": _SENDER_KEY},
                )  # fmt: skip
                for message_id, _state, _submit, declined, pending, sender in await cur.fetchall():
                    if len(chosen) < limit and _takes(route, sender, pending, declined):
                        chosen.append(int(message_id))
            after: tuple[float, int] = (float("-inf"), 0)
            # Every row a page returns stays locked until this transaction ends, so the
            # first page asks for just what is missing: other workers skip only that.
            page = 0
            while len(chosen) < limit:
                # Later pages grow when the route turned rows down (other transports' mail).
                page = min(PAGE, max(limit - len(chosen), 2 * page))
                cur = await conn.execute(
                    q("claim_candidates"),
                    {
                        "now": now,
                        "ignore_backoff": ignore_backoff,
                        "exclude": list(exclude),
                        "submitted_before": submitted_before,
                        "after_time": after[0],
                        "after_id": after[1],
                        "page": page,
                        "sender_key": _SENDER_KEY,
                    },
                )
                rows = await cur.fetchall()
                for message_id, _state, _submit, declined, pending, sender in rows:
                    if len(chosen) < limit and _takes(route, sender, pending, declined):
                        chosen.append(int(message_id))
                if len(rows) < page:
                    break
                after = (float(rows[-1][2]), int(rows[-1][0]))
            if not chosen:
                return []
            stamp = time.time()
            async with conn.pipeline():
                taking = await conn.execute(
                    q("claim_take"),
                    {"ids": chosen, "lease_until": now + lease, "lease": lease,
                     "worker": worker, "inline_limit": inline_limit, "stamp": stamp},
                )  # fmt: skip
                reading = await conn.execute(q("recipients_of"), (chosen,))
                taken = {int(row[0]): row for row in await taking.fetchall()}
                recipient_rows = await reading.fetchall()
                # The claim's worker and fencing token in its event: which worker held
                # which attempt, for a person reading the history and for the crash test.
                async with conn.cursor() as cur:
                    await cur.executemany(
                        q("insert_event"),
                        [(bytes(taken[m][1]), stamp, "offered", route.transport,
                          f"worker {worker or '-'} claim {taken[m][15]}") for m in chosen],
                    )  # fmt: skip
        recipients: dict[int, list[Recipient]] = {m: [] for m in chosen}
        for row in recipient_rows:
            message_id, recipient = recipient_from_row(row)
            recipients[message_id].append(recipient)
        claims = []
        for message_id in chosen:
            row = taken[message_id]
            claims.append(
                Claim(
                    entry=queue_entry((*row[1:12], message_id), recipients[message_id]),
                    props=load_props(row[12]),
                    recipients=recipients[message_id],
                    content=checked_inline(row[14], row[18]),
                    token=int(row[15]),
                    lease_until=now + lease,
                    eight_bit=bool(row[13]),
                    canonical=bool(row[17]),
                    claimed_from=QueueState(row[16]),
                )
            )
        return claims

    async def renew(self, claims: Sequence[Claim], lease: float) -> list[bytes]:
        lost: list[bytes] = []
        if not claims:
            return lost
        until = time.time() + lease
        async with self.tx("renewing claims", durable=False) as conn:
            for claim in claims:
                cur = await conn.execute(
                    q("renew"),
                    {"lease_until": until, "entry_id": claim.entry_id, "token": claim.token},
                )
                if await cur.fetchone() is None:
                    lost.append(claim.entry_id)
                else:
                    claim.lease_until = until
        return lost

    async def release(self, claims: Sequence[Claim]) -> None:
        if not claims:
            return
        now = time.time()
        async with self.tx("releasing claims", durable=False) as conn:
            cur = await conn.execute(
                q("release"),
                {"entry_ids": [c.entry_id for c in claims], "tokens": [c.token for c in claims],
                 "now": now},
            )  # fmt: skip
            released = [bytes(eid) for (eid,) in await cur.fetchall()]
            async with conn.cursor() as events:
                await events.executemany(
                    q("insert_event"), [(eid, now, "unclaimed", None, None) for eid in released]
                )
        self.wake()

    async def mark_handoff(self, entry_id: bytes, token: int | None, begun: bool) -> None:
        # This mark makes a crashed worker's attempt "uncertain" instead of resent, so it
        # must be on the server before the data goes out: any commit gives that, whatever
        # then happens to the worker. Not waited onto disk, as on SQLite (WAL, synchronous
        # = NORMAL): a flush per message would be the one per-message fsync of a send.
        # Marks are group-committed among themselves, not behind outcomes: a mark holds
        # up its message's data (the transport waits for it), an outcome holds up nothing.
        await self._grouped(Job(mark=(entry_id, token, begun)))

    # -- outcomes ---------------------------------------------------------------------

    async def record(self, outcomes: Sequence[Outcome], *, durable: bool = False) -> list[Recorded]:
        """Committed with the other outcomes handed in meanwhile (``_group``).
        All rows of a batch are locked by one query, in message order (two batches never
        deadlock); each outcome is checked against its row in Python, so that a refused
        one is known before anything is written; the writes of each outcome go out
        pipelined under a savepoint, which a failing statement (a constraint) rolls back
        without touching the others."""
        if not outcomes:
            return []
        results: list[Recorded] = await self._grouped(Job(outcomes, durable))
        return results

    async def _grouped(self, job: Job) -> Any:
        if asyncio.get_running_loop() is not self._home:
            # Another thread's loop (a plug-in's synchronous call): its own transaction
            # on the connection kept for that loop.
            await self._commit_batch([job])
            if job.error is not None:
                raise job.error
            return job.result
        # Two lanes, each on a connection of its own: a mark and an outcome are never of
        # the same message at once (the outcome follows its mark), so they lock
        # different rows; a mark locks one row, so it cannot close a lock cycle.
        lane = "marks" if job.mark is not None else "outcomes"
        group = self._groups.get(lane)
        if group is None:
            group = self._groups[lane] = GroupCommit(self._commit_batch)
        return await group.run(job)

    async def _commit_batch(self, jobs: list[Job]) -> None:
        """One transaction for ``jobs`` (see ``_group``), in pipeline mode: a batch of marks
        alone is one round trip (BEGIN, the UPDATEs and COMMIT together); with outcomes,
        one more to read the locked rows they are checked against. Sets each job's result
        or error; raises when the transaction failed as a whole."""
        durable = any(job.durable for job in jobs)
        recording = any(job.mark is None for job in jobs)
        woke = False
        marks: list[tuple[Job, bytes, int | None, Any]] = []
        what = "recording outcomes" if recording else "recording a hand-over"
        async with self.tx(what, durable=durable, pipelined=True) as conn:
            rows: dict[bytes, _Row] = {}
            if recording:
                rows = await self._lock_rows(conn, jobs)
            now = time.time()
            for job in jobs:
                if job.mark is not None:
                    # No savepoint: an UPDATE of one flag fails only with the transaction.
                    entry_id, token, begun = job.mark
                    params = {"begun": begun, "entry_id": entry_id, "token": token}
                    cur = await conn.execute(q("mark_handoff"), params)
                    marks.append((job, entry_id, token, cur))
                else:
                    job.result, due = await self._record_in(conn, job.outcomes, rows, now)
                    woke = woke or due
        # Read after the commit: a refused mark changed nothing, so it needs no rollback.
        for job, entry_id, token, cur in marks:
            if await cur.fetchone() is None:
                job.error = _mark_refused(entry_id, token)
        if woke:
            self.wake()

    async def _lock_rows(self, conn: Conn, jobs: list[Job]) -> dict[bytes, _Row]:
        """The queue rows of every message in ``jobs``, locked in one query in message
        order (two batches never deadlock), as ``_Row``s."""
        ids = sorted(
            {o.entry_id for job in jobs for o in job.outcomes}
            | {job.mark[0] for job in jobs if job.mark is not None}
        )
        cur = await conn.execute(q("lock_entries"), (ids,))
        rows = {bytes(r[0]): _Row(QueueState(r[1]), r[2], int(r[3]), list(r[4] or ()))
                for r in await cur.fetchall()}  # fmt: skip
        missing = [e for e in ids if e not in rows]
        if missing:  # messages outside the queue may still get notes and reports
            cur = await conn.execute(q("message_ids"), (missing,))
            rows.update({bytes(e): _Row(None, None, int(m), []) for e, m in await cur.fetchall()})
        return rows

    async def _record_in(
        self, conn: Conn, outcomes: Sequence[Outcome], rows: dict[bytes, _Row], now: float
    ) -> tuple[list[Recorded], bool]:
        """One caller's outcomes, each in a savepoint; their ``Recorded``s and whether one
        made a message due. ``rows`` (locked) follows the changes."""
        results: list[Recorded] = []
        woke = False
        refused: set[bytes] = set()
        for outcome in outcomes:
            row = rows.get(outcome.entry_id)
            try:
                if outcome.entry_id in refused:
                    raise MapiError(
                        MAPI_E_CALL_FAILED,
                        f"{outcome.entry_id.hex()}: not recorded, an earlier outcome "
                        "of the same message in the batch failed",
                    )
                _check(outcome, row)
            except MapiError as exc:
                results.append(Recorded(error=exc))
                refused.add(outcome.entry_id)
                continue
            assert row is not None
            before = (row.state, row.token, row.gone, list(row.declined))
            try:
                async with conn.transaction():  # a failing statement spares the rest
                    recorded = await self._apply(conn, outcome, row, now)
            except psycopg.DatabaseError as exc:
                if isinstance(exc, psycopg.OperationalError):
                    raise  # the connection or the server: the whole batch fails
                row.state, row.token, row.gone, row.declined = before
                results.append(Recorded(error=self.error(exc, "recording an outcome")))
                refused.add(outcome.entry_id)
                continue
            results.append(recorded)
            woke = woke or outcome.state in _DUE
        return results, woke

    async def _apply(self, conn: Conn, outcome: Outcome, row: _Row, now: float) -> Recorded:
        entry_id, state, message_id = outcome.entry_id, row.state, row.message_id
        declined = row.declined
        async with conn.cursor() as c:
            if outcome.recipients:
                await c.executemany(
                    q("save_recipient"),
                    [
                        (bool(r.responsibility), dump_props(r.props), message_id, r.row_id)
                        for r in outcome.recipients
                    ],
                )
            for ro in outcome.recipient_outcomes:
                await c.executemany(
                    q("recipient_outcome"),
                    [
                        (ro.outcome, ro.transport, ro.report_text, message_id, rid)
                        for rid in ro.row_ids
                    ],
                )
        if outcome.declined and outcome.declined not in declined:
            declined.append(outcome.declined)
            await conn.execute(q("set_declined"), (declined, message_id))
        for note in outcome.notes:
            await add_event(conn, entry_id, note.kind, note.transport, note.detail, now)
        gone = False
        if outcome.state is not None and state is not None:
            gone = await self._change_state(conn, outcome, state, message_id, now)
            row.state, row.token, row.gone = outcome.state, None, gone
        report_ids = []
        for report in outcome.reports:
            if not gone:
                for rid in report.ndr_rows:
                    await conn.execute(q("mark_ndr_sent"), (message_id, rid))
                if report.delay_notice:
                    await conn.execute(q("mark_delay_notified"), (message_id,))
            if report.content is not None:
                _mid, report_id = await insert_message(
                    conn, FOLDER_IDS["Inbox"], report.content, report.props, (), now
                )
                await add_event(conn, report_id, "received", None, "Inbox", now)
                report_ids.append(report_id)
        return Recorded(old=state, report_ids=tuple(report_ids))

    async def _change_state(
        self, conn: Conn, outcome: Outcome, old: QueueState, message_id: int, now: float
    ) -> bool:
        """Apply the state change; True when the message was deleted with it."""
        new = cast(QueueState, outcome.state)
        detail = outcome.error
        if new.finished:
            detail = outcome.folder if outcome.error is None else outcome.error
            if outcome.delete:
                await add_event(
                    conn, outcome.entry_id, outcome.event or new.value, outcome.transport,
                    detail, now,
                )  # fmt: skip
                await conn.execute(q("delete_message_by_id"), (message_id,))
                return True
        folder = outcome.folder if new.finished else None
        params: dict[str, Any] = {
            "entry_id": outcome.entry_id,
            "kind": outcome.event or new.value,
            "transport": outcome.transport,
            "detail": storable(detail) if detail is not None else None,
            "folder_id": None if folder is None else self.folder_id(folder),
            "state": new.value,
            "not_before": None if new.finished else outcome.not_before,
            "error": outcome.error,
            "parked_by": outcome.parked_by,
            "attempt": int(outcome.count_attempt),
            "now": now,
            "message_id": message_id,
        }
        await conn.execute(q("change_state_logged"), params)
        del old
        return False

    def folder_id(self, name: str) -> int:
        try:
            return FOLDER_IDS[name]
        except KeyError:
            raise MapiError(
                MAPI_E_NOT_FOUND, f"no folder called {name!r}; use one of {FOLDERS}"
            ) from None

    # -- recovery ---------------------------------------------------------------------

    async def recover(self, *, parked: bool = True, now: float | None = None) -> dict[str, int]:
        """``Store.recover`` for many workers: with ``now`` None, "every in-flight
        message" means every one no other live worker holds (this worker's own claims,
        claims without a worker name, dead workers'), so a worker starting or settling
        its own leftovers never takes a message from a live worker in mid-send."""
        counts = {"requeued": 0, "uncertain": 0, "unparked": 0}
        at = time.time()
        async with self.tx("recovering the queue") as conn:
            cur = await conn.execute(
                q("recover_candidates"),
                {"now": now, "parked": parked, "me": self.worker_name,
                 "alive_after": at - self.dead_after},
            )  # fmt: skip
            for message_id, entry_id, state, handoff, pending in await cur.fetchall():
                new, key, why = recovered_state(state, bool(handoff), int(pending))
                if now is not None and state != QueueState.PARKED.value:
                    why = why.replace("the spooler stopped", "its worker's lease ran out")
                await conn.execute(q("recover_one"), (new.value, why, at, message_id))
                await add_event(conn, bytes(entry_id), f"recovered-{new.value}", None, why, at)
                counts[key] += 1
        if counts["requeued"] or counts["unparked"]:
            self.wake()
        return counts


def _mark_refused(entry_id: bytes, token: int | None) -> MapiError:
    if token is None:
        return MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
    return StaleClaim(entry_id, token)


@dataclass
class _Row:
    """A locked queue row as a batch of outcomes changes it."""

    state: QueueState | None  # None: a message outside the queue (notes, reports only)
    token: int | None
    message_id: int
    declined: list[str]
    gone: bool = False


def _check(outcome: Outcome, row: _Row | None) -> None:
    """Raise what refuses ``outcome`` (unknown message, stale token, a transition the state
    machine or ``expect`` does not allow); nothing when it may be applied."""
    entry_id = outcome.entry_id
    if outcome.token is not None and (row is None or row.gone or row.state is None):
        raise StaleClaim(entry_id, outcome.token)  # the claim ended with its message
    if row is None or row.gone:
        raise MapiError(MAPI_E_NOT_FOUND, f"no message with entry id {entry_id.hex()}")
    if row.state is None:
        if outcome.state is not None or outcome.declined:
            raise MapiError(MAPI_E_NOT_FOUND, f"{entry_id.hex()} is not in the queue")
        return
    if outcome.token is not None and (
        row.state is not QueueState.IN_FLIGHT or row.token != outcome.token
    ):
        raise StaleClaim(entry_id, outcome.token)
    if outcome.state is not None:
        allowed = outcome.expect
        if (allowed is not None and row.state not in allowed) or (
            outcome.state not in TRANSITIONS[row.state]
        ):
            raise InvalidTransition(
                f"{entry_id.hex()}: cannot go from {row.state.value} to {outcome.state.value}"
            )
