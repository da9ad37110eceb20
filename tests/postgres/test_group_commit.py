"""Group commit of the PostgreSQL store (``store/postgres/_group.py``): outcomes, and
hand-over marks, that callers hand in together share one transaction, each refused or
applied on its own."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from mapispool.store.model import QueueState, StaleClaim
from mapispool.store.postgres import PostgresStore
from mapispool.store.postgres._group import GroupCommit, Job
from mapispool.store.types import Claim, Outcome
from tests.postgres.test_claims import ROUTE, submit
from tests.servers.postgres import PgStoreLocation


async def claimed(store: PostgresStore, n: int) -> list[Claim]:
    await submit(store, n)
    claims = await store.claim(ROUTE, now=time.time(), limit=n, worker="a")
    assert len(claims) == n
    return claims


def writers(loc: PgStoreLocation, entry_ids: list[bytes]) -> set[float]:
    """The transactions that last changed the queue rows of ``entry_ids``, told apart by
    their clock: a transaction stamps every row it changes with the time it started
    (``xmin`` would not do: each outcome's savepoint is a subtransaction of its own)."""
    with psycopg.connect(loc.url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT DISTINCT q.updated_at FROM "{loc.schema}".queue q '
            f'JOIN "{loc.schema}".messages m ON m.id = q.message_id '
            "WHERE m.entry_id = ANY(%s)",
            (entry_ids,),
        ).fetchall()
    return {float(r[0]) for r in rows}


async def test_outcomes_handed_in_together_share_one_transaction(
    pg: PostgresStore, pg_store: PgStoreLocation
) -> None:
    """Twenty callers recording at once: all their outcomes are applied, in at most two
    transactions (the first caller's may start alone), not one each."""
    claims = await claimed(pg, 20)
    results = await asyncio.gather(
        *(
            pg.record([Outcome(c.entry_id, QueueState.SENT, token=c.token, folder="Sent Items")])
            for c in claims
        )
    )
    assert all(r.error is None for rs in results for r in rs)
    ids = [c.entry_id for c in claims]
    for entry_id in ids:
        assert (await pg.queue_entry(entry_id)).state is QueueState.SENT
    assert len(writers(pg_store, ids)) <= 2


async def test_a_refused_outcome_or_mark_spares_the_others_of_its_batch(
    pg: PostgresStore,
) -> None:
    """A stale token in one caller's outcome and in one caller's mark refuses those two
    only; the others of the same batches are committed."""
    good, stale, other = await claimed(pg, 3)
    marks = await asyncio.gather(
        pg.mark_handoff(good.entry_id, good.token, True),
        pg.mark_handoff(stale.entry_id, stale.token + 1, True),
        pg.mark_handoff(other.entry_id, other.token, True),
        return_exceptions=True,
    )
    assert marks[0] is None
    assert marks[2] is None
    assert isinstance(marks[1], StaleClaim)
    recorded = await asyncio.gather(
        pg.record([Outcome(good.entry_id, QueueState.SENT, token=good.token)]),
        pg.record([Outcome(stale.entry_id, QueueState.SENT, token=stale.token + 1)]),
        pg.record([Outcome(other.entry_id, QueueState.SENT, token=other.token)]),
    )
    assert [r.error is None for (r,) in recorded] == [True, False, True]
    assert isinstance(recorded[1][0].error, StaleClaim)
    assert (await pg.queue_entry(stale.entry_id)).state is QueueState.IN_FLIGHT


async def test_jobs_handed_in_during_a_commit_form_the_next_batch() -> None:
    """No timer: the first job goes alone; those handed in while it commits go together
    next; a failed batch fails its own callers only."""
    batches: list[list[str]] = []
    release = asyncio.Event()

    async def commit(jobs: list[Job]) -> None:
        batches.append([str(job.result) for job in jobs])
        if len(batches) == 1:
            await release.wait()
            raise RuntimeError("the server went away")
        for job in jobs:
            job.result = f"done {job.result}"

    group = GroupCommit(commit)
    first = asyncio.ensure_future(group.run(Job(result="1")))
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(group.run(Job(result=str(i)))) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(RuntimeError, match="went away"):
        await first
    assert await asyncio.gather(*later) == ["done 2", "done 3", "done 4"]
    assert batches == [["1"], ["2", "3", "4"]]
