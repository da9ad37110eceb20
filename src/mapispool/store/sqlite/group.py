"""Group commit for ``SqliteStore.record``: the outcomes that concurrent callers (the
connections of a transport, several transports) hand in while the writer thread is busy
are committed together, in one transaction, each outcome in its own savepoint.

No timer: a batch is whatever queued up while the previous transaction (its fsync, or
the WAL write) ran, up to ``GROUP_LIMIT`` outcomes. A lone caller waits for no one; under
load the batches grow by themselves, which is when one commit for many messages pays."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Sequence

from ..model import DUE_STATES
from ..types import Outcome, Recorded
from . import queue
from .database import Database, DbThread

#: At most this many outcomes in one transaction.
GROUP_LIMIT = 512

Result = tuple[list[Recorded], bool]
Job = tuple[Sequence[Outcome], bool, concurrent.futures.Future[Result]]


class GroupCommit:
    """Batches ``record`` calls onto the writer thread."""

    def __init__(self, db: Database, thread: DbThread) -> None:
        self._db = db
        self._thread = thread
        self._lock = threading.Lock()
        self._pending: list[Job] = []
        self._scheduled = False

    def submit(
        self, outcomes: Sequence[Outcome], durable: bool
    ) -> concurrent.futures.Future[Result]:
        """Queue ``outcomes``; the future gives their ``Recorded``s and whether one of them
        made a message due."""
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        with self._lock:
            self._pending.append((outcomes, durable, future))
            start = not self._scheduled
            self._scheduled = True
        if start:
            self._thread.submit(self._commit)
        return future

    def _commit(self) -> None:
        """On the writer thread: one transaction for what is queued (up to the limit)."""
        with self._lock:
            batch: list[Job] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0][0]) <= GROUP_LIMIT):
                job = self._pending.pop(0)
                batch.append(job)
                count += len(job[0])
            more = bool(self._pending)
            self._scheduled = more
        if more:
            self._thread.submit(self._commit)
        outcomes = [o for job in batch for o in job[0]]
        try:
            results, _due = queue.record(self._db, outcomes, durable=any(job[1] for job in batch))
        except BaseException as exc:
            for _outcomes, _durable, future in batch:
                future.set_exception(exc)
            return
        start = 0
        for job_outcomes, _durable, future in batch:
            mine = results[start : start + len(job_outcomes)]
            start += len(job_outcomes)
            due = any(
                r.error is None and o.state in DUE_STATES
                for o, r in zip(job_outcomes, mine, strict=True)
            )
            future.set_result((mine, due))
