"""Group commit for ``SqliteStore.record`` and ``mark_handoff``: the outcomes and
hand-over marks that concurrent callers (the connections of a transport, several
transports, the next message's mark while the last one's outcome is written) hand in
while the writer thread is busy are committed together, in one transaction, each in its
own savepoint, in the order they were handed in.

No timer: a batch is whatever queued up while the previous transaction (its fsync, or
the WAL write) ran, up to ``GROUP_LIMIT`` outcomes. A lone caller waits for no one; under
load the batches grow by themselves, which is when one commit for many messages pays.

The callers of one batch are woken with one call into each caller's event loop, not one
per caller: every cross-thread wake-up costs a write to the loop's self-pipe and a turn
of its selector."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..model import DUE_STATES
from ..types import Outcome, Recorded
from . import queue
from .database import Database, DbThread

#: At most this many outcomes in one transaction.
GROUP_LIMIT = 512

#: ``record``'s result: the ``Recorded`` of each outcome, and whether one made a message due.
Result = tuple[list[Recorded], bool]


@dataclass
class _Job:
    """One caller's work: outcomes to record, or one hand-over mark (``mark``: entry id
    and claim token), and the future its caller awaits on its own loop."""

    future: asyncio.Future[Result]
    loop: asyncio.AbstractEventLoop
    outcomes: Sequence[Outcome] = ()
    durable: bool = False
    mark: tuple[bytes, int | None] | None = None
    result: Result | None = None
    error: BaseException | None = None

    @property
    def size(self) -> int:
        return max(1, len(self.outcomes))


@dataclass
class _Batch:
    jobs: list[_Job] = field(default_factory=list)
    count: int = 0


class GroupCommit:
    """Batches ``record`` calls and hand-over marks onto the writer thread."""

    def __init__(self, db: Database, thread: DbThread) -> None:
        self._db = db
        self._thread = thread
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._scheduled = False

    async def record(self, outcomes: Sequence[Outcome], durable: bool) -> Result:
        """Commit ``outcomes`` with whatever else is queued; their ``Recorded``s and
        whether one of them made a message due."""
        loop = asyncio.get_running_loop()
        return await self._queue(_Job(loop.create_future(), loop, outcomes, durable))

    async def mark(self, entry_id: bytes, token: int | None) -> None:
        """``Store.mark_handoff(entry_id, token, True)``, committed (to the WAL) with
        whatever else is queued; raises as ``queue.mark_handoff`` does."""
        loop = asyncio.get_running_loop()
        await self._queue(_Job(loop.create_future(), loop, mark=(entry_id, token)))

    def _queue(self, job: _Job) -> asyncio.Future[Result]:
        with self._lock:
            self._pending.append(job)
            start = not self._scheduled
            self._scheduled = True
        if start:
            self._thread.submit(self._commit)
        return job.future

    def _take(self) -> _Batch:
        batch = _Batch()
        with self._lock:
            while self._pending and (
                not batch.jobs or batch.count + self._pending[0].size <= GROUP_LIMIT
            ):
                job = self._pending.pop(0)
                batch.jobs.append(job)
                batch.count += job.size
            more = bool(self._pending)
            self._scheduled = more
        if more:
            self._thread.submit(self._commit)
        return batch

    def _commit(self) -> None:
        """On the writer thread: one transaction for what is queued (up to the limit),
        then one wake-up per event loop that waits for a part of it."""
        batch = self._take()
        jobs = batch.jobs
        try:
            with self._db.tx(
                "recording outcomes", durable=any(job.durable for job in jobs)
            ) as conn:
                now = time.time()
                failed: set[bytes] = set()
                for job in jobs:
                    if job.mark is not None:
                        job.error = queue.mark_in(conn, *job.mark)
                    else:
                        results, _due = queue.record_in(self._db, conn, job.outcomes, now, failed)
                        due = any(
                            r.error is None and o.state in DUE_STATES
                            for o, r in zip(job.outcomes, results, strict=True)
                        )
                        job.result = (results, due)
        except BaseException as exc:
            for job in jobs:
                job.result, job.error = None, exc
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = defaultdict(list)
        for job in jobs:
            by_loop[job.loop].append(job)
        for loop, mine in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, mine)


def _resolve(jobs: list[_Job]) -> None:
    """On the caller's loop: settle each job's future."""
    for job in jobs:
        if job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result if job.result is not None else ([], False))
