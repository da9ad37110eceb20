"""Group commit for ``PostgresStore.record`` and ``mark_handoff``: the outcomes and
hand-over marks that callers on the store's event loop hand in while an earlier batch is
being committed go to the server together, in one transaction, in the order they were
handed in (as ``store/sqlite/group.py`` does for SQLite); ``_record`` writes them.

No timer: a batch is whatever queued up while the previous transaction ran, up to
``GROUP_LIMIT`` outcomes. A lone caller waits for no one; under load the batches grow by
themselves, and a batch costs one BEGIN, one row lock query and one COMMIT (one WAL
flush when durable) instead of one of each per message.

A job's fate is its own: a refused outcome or mark (a stale token, a constraint) is
reported to its caller only, and the others of its batch are committed. A failure of the
whole transaction (the connection, the server) is raised to every caller of the batch,
whose writes then all stayed undone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..types import Outcome

#: At most this many outcomes in one transaction.
GROUP_LIMIT = 256


@dataclass
class Job:
    """One caller's work: outcomes to record, or one hand-over mark (``mark``: entry id,
    claim token, begun). The commit sets ``result`` or ``error``."""

    outcomes: Sequence[Outcome] = ()
    durable: bool = False
    mark: tuple[bytes, int | None, bool] | None = None
    result: Any = None
    error: BaseException | None = None
    future: asyncio.Future[Any] | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return max(1, len(self.outcomes))


#: Commits a batch in one transaction, setting each job's ``result`` or ``error``; raises
#: when the transaction as a whole failed.
Commit = Callable[[list[Job]], Awaitable[None]]


class GroupCommit:
    """Batches jobs of one event loop (the store's) into shared transactions."""

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._pending: list[Job] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, job: Job) -> Any:
        """Commit ``job`` with whatever else is queued; its result, or raise its error.
        A caller cancelled while waiting does not take its job back: once handed in, it
        is committed (or not) with its batch, as a lone transaction would have been."""
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        self._pending.append(job)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="mapispool-pg-group-commit")
        return await job.future

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        count = 0
        while self._pending and (not batch or count + self._pending[0].size <= GROUP_LIMIT):
            job = self._pending.pop(0)
            batch.append(job)
            count += job.size
        return batch

    async def _drain(self) -> None:
        while self._pending:
            batch = self._take()
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for job in batch + self._pending:
                    if job.future is not None:
                        job.future.cancel()
                self._pending.clear()
                raise
            except BaseException as exc:
                for job in batch:
                    job.result, job.error = None, exc
            for job in batch:
                _settle(job)


def _settle(job: Job) -> None:
    future = job.future
    if future is None or future.done():  # its caller gave up waiting
        return
    if job.error is not None:
        future.set_exception(job.error)
    else:
        future.set_result(job.result)
