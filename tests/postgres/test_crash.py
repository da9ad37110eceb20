"""The PostgreSQL crash test: three worker processes on one store, killed with kill -9
and paused past their lease (SIGSTOP, then SIGCONT: zombies) at random while messages
are submitted; then the queue is drained and reconciled (issue #12):

* nothing is lost: every message ends sent or uncertain, a sent one reached the sink
  exactly once;
* duplicates only among uncertain messages;
* no late write of a fenced-off worker was accepted: every accepted outcome carries the
  last token issued for its message.

Workers here are store-level (tests/postgres/_crash_worker.py); test_serve_crash.py runs
the same crash with real ``mapispool serve`` workers (the spooler's own use of the store)
and has the 100 kills of #12, so this one keeps 30 by default.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mapispool.store.model import QueueState, Recipient
from mapispool.store.postgres import PostgresStore
from tests.servers.postgres import PgStoreLocation

#: 30 by default: test_serve_crash.py does #12's 100 kills with real ``serve`` workers.
KILLS = int(os.environ.get("MAPISPOOL_PG_CRASH_KILLS", "30"))
LEASE = 1.5
WORKERS = 3


class Workers:
    def __init__(self, where: PgStoreLocation, logs: Path) -> None:
        self.where, self.logs = where, logs
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.started = 0

    async def start(self, slot: int) -> None:
        self.started += 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.postgres._crash_worker", self.where.url,
            self.where.schema, f"w{slot}-{self.started}", str(LEASE), str(self.logs),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        self.procs[slot] = proc

    async def kill(self, slot: int) -> None:
        proc = self.procs.pop(slot)
        proc.kill()
        await proc.wait()

    async def stop_all(self) -> None:
        for slot in list(self.procs):
            await self.kill(slot)


async def submit(store: PostgresStore, n: int) -> list[bytes]:
    now = time.time()
    content = b"Subject: crash\r\n\r\nbody\r\n"
    rcpt = [Recipient("a@example.test")]
    return [
        await store.submit(
            content, {}, rcpt, submit_time=now, not_before=None, expires_at=now + 86400
        )
        for _ in range(n)
    ]


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(1200)
async def test_workers_killed_and_paused_lose_nothing(
    pg: PostgresStore, pg_store: PgStoreLocation, tmp_path: Path
) -> None:
    rng = random.Random(12)
    workers = Workers(pg_store, tmp_path)
    submitted: list[bytes] = []
    for slot in range(WORKERS):
        await workers.start(slot)
    kills = pauses = 0
    try:
        while kills < KILLS:
            submitted += await submit(pg, rng.randint(1, 6))
            await asyncio.sleep(rng.uniform(0.02, 0.25))
            slot = rng.randrange(WORKERS)
            if rng.random() < 0.15:
                proc = workers.procs[slot]
                proc.send_signal(signal.SIGSTOP)  # a zombie: paused past its lease
                await asyncio.sleep(LEASE * 1.5)
                proc.send_signal(signal.SIGCONT)
                pauses += 1
            else:
                await workers.kill(slot)
                await workers.start(slot)
                kills += 1
        # Drain: workers run undisturbed until every message is finished or uncertain.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            counts = await pg.count_by_state()
            if set(counts) <= {QueueState.SENT, QueueState.UNCERTAIN}:
                break
            await asyncio.sleep(0.5)
    finally:
        await workers.stop_all()
    counts = await pg.count_by_state()
    assert set(counts) <= {QueueState.SENT, QueueState.UNCERTAIN}, counts
    assert sum(counts.values()) == len(submitted)
    states = {e: (await pg.queue_entry(e, with_recipients=False)).state for e in submitted}
    delivered = Counter(bytes.fromhex(w[1]) for w in lines(tmp_path / "sink.log"))
    lost = [e.hex() for e, s in states.items() if s is QueueState.SENT and delivered[e] == 0]
    assert not lost, f"sent but never delivered: {lost}"
    duplicated = [e for e, n in delivered.items() if n > 1]
    assert all(states[e] is QueueState.UNCERTAIN for e in duplicated), "a sent one twice"
    issued: dict[str, list[int]] = defaultdict(list)
    for _claim, eid, token in lines(tmp_path / "claims.log"):
        issued[eid].append(int(token))
    accepted = lines(tmp_path / "accepted.log")
    late = [(eid, t) for _ok, eid, t in accepted if int(t) != max(issued[eid])]
    assert not late, f"late writes accepted from fenced-off workers: {late}"
    assert len({eid for _ok, eid, _t in accepted}) == len(accepted)
    print(
        f"{len(submitted)} messages, {kills} kills, {pauses} pauses: {dict(counts)};"
        f" {len(duplicated)} delivered twice (all uncertain);"
        f" {len(lines(tmp_path / 'fenced.log'))} late writes refused"
    )
