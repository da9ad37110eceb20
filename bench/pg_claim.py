"""The PostgreSQL store's claim query stays flat in the queue's length (issue #12).

Two stores (schemas) on one server, one with 1,000 queued messages, one with 100,000;
claims of a page of 50 (then released, so every run sees the same queue) are timed in
interleaved pairs, and EXPLAIN ANALYZE of the candidate query is printed for both.

    .venv/bin/python -m bench.pg_claim [--url postgresql://...] [--runs 15]

Without --url (or MAPISPOOL_TEST_PG) it starts a throwaway cluster as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from mapispool.store.postgres import PostgresStore
from mapispool.store.postgres._outbound import _SENDER_KEY
from mapispool.store.postgres._sql import q
from mapispool.store.types import Route

ROUTE = Route("smtp", (("smtp", ("SMTP",)),))
PAGE = 50

_FILL = """
INSERT INTO messages (entry_id, folder_id, subject, props, size, created_at)
SELECT uuid_send(gen_random_uuid()), 1, 'bench ' || i, '{}', 2048, %(t)s + i * 1e-6
FROM generate_series(1, %(n)s) AS i;
INSERT INTO contents (message_id, data, sha256)
SELECT id, convert_to(repeat('x', 2048), 'UTF8'), NULL FROM messages;
INSERT INTO recipients (message_id, row_id, address, addrtype, recipient_type, props)
SELECT id, 0, 'rcpt' || id || '@example.test', 'SMTP', 1, '{}' FROM messages;
INSERT INTO queue (message_id, state, submit_time, expires_at, due_at, updated_at)
SELECT id, 'queued', created_at, created_at + 86400, created_at, created_at FROM messages;
ANALYZE;
"""


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """``url``, or a throwaway cluster's URL for the duration."""
    if url:
        yield url
        return
    from tests.servers.postgres import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="mapispool-bench-pg-"))
    base.chmod(0o711)
    cluster = PostgresServer(base)
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


async def make_store(url: str, schema: str, n: int) -> PostgresStore:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    store = await PostgresStore.open(url, schema=schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(_FILL.encode().replace(b"%(t)s", str(time.time()).encode())
                     .replace(b"%(n)s", str(n).encode()))  # fmt: skip
    return store


async def claim_once(store: PostgresStore) -> float:
    started = time.perf_counter()
    claims = await store.claim(ROUTE, now=time.time(), limit=PAGE)
    elapsed = time.perf_counter() - started
    assert len(claims) == PAGE
    await store.release(claims)
    return elapsed


def explain(url: str, schema: str) -> str:
    params = {"now": time.time(), "ignore_backoff": False, "transport": "smtp",
              "released": [], "exclude": [], "submitted_before": None,
              "after_time": float("-inf"), "after_id": 0, "page": PAGE,
              "sender_key": _SENDER_KEY}  # fmt: skip
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        query = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + q("claim_candidates")
        rows = conn.execute(query.encode(), params).fetchall()
        conn.rollback()
    return "\n".join(f"    {r[0]}" for r in rows)


async def main(url: str, runs: int, sizes: tuple[int, int]) -> None:
    small = await make_store(url, "bench_claim_small", sizes[0])
    large = await make_store(url, "bench_claim_large", sizes[1])
    try:
        for store in (small, large):  # warm the caches and the pool
            for _ in range(3):
                await claim_once(store)
        times: dict[int, list[float]] = {sizes[0]: [], sizes[1]: []}
        for _ in range(runs):
            times[sizes[0]].append(await claim_once(small))
            times[sizes[1]].append(await claim_once(large))
        ratios = [b / a for a, b in zip(times[sizes[0]], times[sizes[1]], strict=True)]
        for n, values in times.items():
            ms = [v * 1e3 for v in values]
            print(
                f"claim of {PAGE} with {n:>7,} queued: median {statistics.median(ms):6.2f} ms"
                f" (min {min(ms):.2f}, max {max(ms):.2f})"
            )
        print(
            f"ratio {sizes[1]:,} / {sizes[0]:,}: median {statistics.median(ratios):.2f}"
            f" (spread {min(ratios):.2f}-{max(ratios):.2f}, {runs} interleaved pairs)"
        )
        for schema, n in (("bench_claim_small", sizes[0]), ("bench_claim_large", sizes[1])):
            print(f"\nEXPLAIN ANALYZE of the candidate query, {n:,} queued:")
            print(explain(url, schema))
    finally:
        await small.close()
        await large.close()
        with psycopg.connect(url, autocommit=True) as conn:
            for schema in ("bench_claim_small", "bench_claim_large"):
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("MAPISPOOL_TEST_PG"))
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    with server(args.url) as url:
        asyncio.run(main(url, args.runs, (args.small, args.large)))
