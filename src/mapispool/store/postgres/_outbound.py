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
from typing import Any

from ...mapi import PR_SENDER_EMAIL_ADDRESS
from ..base import INLINE_LIMIT, PAGE
from ..codec import load_props
from ..model import QueueState, Recipient, recovered_state
from ..types import Claim, Outcome, Recorded, Route
from ._group import GroupCommit, Job
from ._plumbing import Plumbing
from ._record import HeldClaims, commit_marks, commit_outcomes, folder_id
from ._rows import add_event, checked_inline, queue_entry, recipient_from_row
from ._script import Script
from ._sql import q

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
    #: What this store's claims returned, for outcomes in one round trip (``_record``).
    _held: HeldClaims

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
            # One round trip: the take (with its events) and the recipients.
            script = Script()
            taking = script.call(
                "claim_take",
                {"ids": chosen, "lease_until": now + lease, "lease": lease, "worker": worker,
                 "inline_limit": inline_limit, "stamp": stamp, "transport": route.transport,
                 "worker_label": worker or "-"},
            )  # fmt: skip
            reading = script.call("recipients_of", (chosen,))
            results = await script.run(conn)
            taken = {int(row[0]): row for row in results[taking] or ()}
            recipient_rows = results[reading] or []
        recipients: dict[int, list[Recipient]] = {m: [] for m in chosen}
        for row in recipient_rows:
            message_id, recipient = recipient_from_row(row)
            recipients[message_id].append(recipient)
        claims = []
        for message_id in chosen:
            row = taken[message_id]
            self._held.hold(bytes(row[1]), message_id, int(row[15]))
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
            for entry_id in released:
                self._held.forget(entry_id)
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
        """Committed with the other outcomes handed in meanwhile (``_group``; how, in
        ``_record``): each outcome is checked against its row in Python, so that a refused
        one is known before anything is written, and the rows of a batch are locked in
        one query, in message order (two batches never deadlock). One round trip when
        every outcome is of a claim this store holds, else two (the rows read first)."""
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
        """One transaction for ``jobs`` (see ``_record``): marks in one round trip,
        outcomes in two. Sets each job's result or error; raises when the transaction
        failed as a whole. A batch holds marks or outcomes, never both (two lanes)."""
        marks = [job for job in jobs if job.mark is not None]
        outcomes = [job for job in jobs if job.mark is None]
        if marks:
            async with self.scripted("recording a hand-over") as conn:
                await commit_marks(conn, marks)
        if outcomes:
            durable = any(job.durable for job in outcomes)
            async with self.scripted("recording outcomes") as conn:
                woke = await commit_outcomes(
                    conn, outcomes, durable=durable, now=time.time(), refusal=self.error,
                    held=self._held,
                )  # fmt: skip
            self._held.settle(outcomes)
            if woke:
                self.wake()

    def folder_id(self, name: str) -> int:
        return folder_id(name)

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
