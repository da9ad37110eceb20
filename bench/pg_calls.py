"""What one call to the PostgreSQL store costs the worker: the measurements behind the
store's choice of scripts over psycopg's pipeline mode (bench/PG_WORKERS.md, "One or two
round trips a message").

Two parts, on a throwaway cluster as durable as the worker benchmark's (fsync on):

1. **One transaction, three ways**: BEGIN, SET LOCAL, an UPDATE and COMMIT sent in
   psycopg's asynchronous pipeline mode, as plain statements (one round trip each), and
   as one simple query bound on the client (what ``store/postgres/_script.py`` does).
   The forms alternate in blocks, and each is timed as wall time and as this process's
   CPU time per transaction.
2. **The store's calls**: ``submit`` (durable: it waits for the disk), then
   ``mark_handoff`` and ``record`` of a sent outcome on the claimed messages, one after
   another, per call.

    .venv/bin/python -m bench.pg_calls [--n 2000]

To compare another version of the store, run the same command with ``PYTHONPATH``
pointing at that version's ``src`` (the benchmark imports the store from wherever
``mapispool`` is found).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

from mapispool.store.model import QueueState, Recipient
from mapispool.store.postgres import PostgresStore
from mapispool.store.types import Outcome, Route

from .pg_workers import DurablePostgres

ROUTE = Route("smtp", (("smtp", ("SMTP",)),))
UPDATE = "UPDATE t SET h = NOT h WHERE id = %s"
BLOCKS = 5


async def _timed(n: int, call: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Wall and CPU milliseconds per call, ``n`` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await call(i)
    return (
        (time.perf_counter() - wall) / n * 1e3,
        (time.process_time() - cpu) / n * 1e3,
    )


async def transaction_forms(url: str, n: int) -> dict[str, list[tuple[float, float]]]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
    await conn.execute("CREATE TABLE t (id integer PRIMARY KEY, h boolean)")
    await conn.execute("INSERT INTO t SELECT g, false FROM generate_series(0, 99) g")
    client = psycopg.AsyncClientCursor(conn)

    async def pipelined(i: int) -> None:
        async with conn.pipeline(), conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(UPDATE, (i % 100,))

    async def plain(i: int) -> None:
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(UPDATE, (i % 100,))

    async def script(i: int) -> None:
        text = client.mogrify(UPDATE, (i % 100,))
        await client.execute(f"BEGIN; SET LOCAL synchronous_commit = off; {text}; COMMIT")

    forms = {"pipeline mode": pipelined, "plain statements": plain, "one simple query": script}
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in forms}
    for _ in range(BLOCKS):  # interleaved: A, B, C, A, B, C, ...
        for name, form in forms.items():
            found[name].append(await _timed(n // BLOCKS, form))
    await conn.close()
    return found


async def store_calls(url: str, n: int) -> dict[str, tuple[float, float]]:
    store = await PostgresStore.open(url, schema="calls")
    try:
        now = time.time()

        async def submit(i: int) -> None:
            await store.submit(
                f"Subject: {i}\r\n\r\nbody\r\n".encode(), {}, [Recipient(f"r{i}@example.test")],
                submit_time=now + i * 1e-3, not_before=None, expires_at=now + 3600,
            )  # fmt: skip

        submitted = await _timed(n, submit)
        claims = []
        while len(claims) < n:
            claims += await store.claim(ROUTE, now=time.time(), limit=64, worker="bench")

        async def mark(i: int) -> None:
            await store.mark_handoff(claims[i].entry_id, claims[i].token, True)

        async def record(i: int) -> None:
            c = claims[i]
            outcome = Outcome(c.entry_id, QueueState.SENT, token=c.token, folder="Sent Items")
            (recorded,) = await store.record([outcome])
            recorded.check()

        return {
            "submit (durable)": submitted,
            "mark_handoff": await _timed(n, mark),
            "record (sent)": await _timed(n, record),
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="calls of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        server = DurablePostgres(Path(base)).start()
        try:
            forms = asyncio.run(transaction_forms(server.url, args.n))
            calls = asyncio.run(store_calls(server.url, args.n))
        finally:
            server.stop()
    print(f"One transaction (BEGIN, SET LOCAL, UPDATE, COMMIT), {args.n} in {BLOCKS} "
          "interleaved blocks; medians of the blocks (min..max), ms per transaction:")  # fmt: skip
    for name, runs in forms.items():
        walls, cpus = [w for w, _c in runs], [c for _w, c in runs]
        print(f"  {name:18s} wall {statistics.median(walls):.3f} "
              f"({min(walls):.3f}..{max(walls):.3f})  CPU {statistics.median(cpus):.3f} "
              f"({min(cpus):.3f}..{max(cpus):.3f})")  # fmt: skip
    print(f"The store's calls, {args.n} one after another, ms per call:")
    for name, (wall, cpu) in calls.items():
        print(f"  {name:18s} wall {wall:.3f}  CPU {cpu:.3f}")


if __name__ == "__main__":
    main()
