"""Outcomes and marks sent as scripts (``store/postgres/_script.py``, ``_record.py``):
several statements in one round trip, bound on the client, the outcome statements
prepared once per connection."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from mapispool.mapi import PR_SUBJECT, MapiError
from mapispool.store.model import QueueState, Recipient
from mapispool.store.postgres import PostgresStore
from mapispool.store.postgres._script import LARGE, Script, prepared
from mapispool.store.text import storable
from mapispool.store.types import Delivery, Note, Outcome, RecipientOutcome
from tests.postgres.test_group_commit import claimed, writers
from tests.servers.postgres import PgStoreLocation

#: Text a hostile server may send back: a NUL (PostgreSQL refuses it in text), a lone
#: surrogate (a reply decoded with surrogateescape), quotes and a backslash (client-side
#: binding must quote them), and what would end the statement if it were pasted in.
HOSTILE = "550 no\x00such\udcff user 'x'; DROP TABLE queue; -- \\ $1 %s"


async def test_hostile_text_in_an_outcome_is_stored_as_storable_text(
    pg: PostgresStore, pg_store: PgStoreLocation
) -> None:
    """An error text, a note and a recipient's report text with every awkward character
    land in the store exactly as ``storable`` makes them, and nothing else is touched."""
    (claim,) = await claimed(pg, 1)
    row = claim.recipients[0].row_id
    (recorded,) = await pg.record(
        [
            Outcome(
                claim.entry_id, QueueState.FAILED, token=claim.token, error=HOSTILE,
                transport="smtp", folder="Sent Items",
                recipient_outcomes=[RecipientOutcome((row,), "failed", "smtp", HOSTILE)],
                notes=[Note("note", "smtp", HOSTILE)],
            )
        ]
    )  # fmt: skip
    assert recorded.error is None
    entry = await pg.queue_entry(claim.entry_id)
    assert entry.state is QueueState.FAILED
    assert entry.last_error == storable(HOSTILE)
    with psycopg.connect(pg_store.url, autocommit=True) as conn:
        schema = f'"{pg_store.schema}"'
        texts = conn.execute(
            f"SELECT detail FROM {schema}.events "
            "WHERE entry_id = %s AND kind IN ('note', 'failed')",
            (claim.entry_id,),
        ).fetchall()
        report = conn.execute(f"SELECT report_text FROM {schema}.recipients").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
            (pg_store.schema,),
        ).fetchone()
    assert sorted(t for (t,) in texts) == [storable(HOSTILE)] * 2
    assert report == (storable(HOSTILE),)
    assert tables is not None
    assert tables[0] > 5  # the queue table and the others are all still there


async def test_a_write_the_server_refuses_spares_the_others_of_its_batch(
    pg: PostgresStore, pg_store: PgStoreLocation
) -> None:
    """A write that fails on the server (here a recipient row number out of integer
    range, which the Python checks do not catch) refuses that caller's outcome only:
    the batch is done again one outcome at a time, and the other callers' outcomes are
    committed."""
    claims = await claimed(pg, 3)
    good = [c for i, c in enumerate(claims) if i != 1]
    bad = claims[1]
    results = await asyncio.gather(
        *(
            pg.record(
                [
                    Outcome(
                        c.entry_id, QueueState.SENT, token=c.token, folder="Sent Items",
                        recipient_outcomes=[
                            RecipientOutcome((2**40 if c is bad else 0,), "delivered", "smtp")
                        ],
                    )
                ]
            )
            for c in claims
        )
    )  # fmt: skip
    errors = [r.error for (r,) in results]
    assert errors[0] is None
    assert errors[2] is None
    assert isinstance(errors[1], MapiError)
    assert "out of range" in str(errors[1])
    for c in good:
        assert (await pg.queue_entry(c.entry_id)).state is QueueState.SENT
    assert (await pg.queue_entry(bad.entry_id)).state is QueueState.IN_FLIGHT
    # the good ones still share one transaction (or two: the first caller's may go alone)
    assert len(writers(pg_store, [c.entry_id for c in good])) <= 2


async def test_prepared_statements_survive_a_rollback_on_the_same_connection(
    pg: PostgresStore,
) -> None:
    """psycopg deallocates every prepared statement of a connection after a rollback
    when it has prepared statements of its own; the store's connections leave psycopg's
    preparing off, so the outcome statements prepared for scripts stay usable."""
    conn = await pg.connect()
    try:
        for _ in range(8):  # more than psycopg's default threshold for preparing a query
            await conn.execute("SELECT count(*) FROM queue WHERE state = %s", ("queued",))
        first = Script()
        first.call("insert_event", (b"x" * 16, 1.0, "note", None, "before"))
        await first.run(conn)
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with conn.transaction():
                await conn.execute("SELECT 1 / 0")
        again = Script()
        slot = again.add("SELECT count(*) FROM events WHERE detail = %s", ("before",))
        again.call("insert_event", (b"x" * 16, 2.0, "note", None, "after"))
        results = await again.run(conn)
        assert results[slot] == [(1,)]
        names = await (await conn.execute("SELECT name FROM pg_prepared_statements")).fetchall()
        assert (prepared("insert_event").name,) in names
    finally:
        await conn.close()


async def test_a_script_returns_each_statements_rows_in_order(pg: PostgresStore) -> None:
    """One round trip, one result per statement: rows for those that return some, None
    for the others; a failing statement raises, and the transaction it began is left
    for the caller to roll back."""
    conn = await pg.connect()
    try:
        script = Script()
        script.add("BEGIN")
        one = script.add("SELECT %s::int, %s::text", (1, "a'b"))
        script.add("SELECT 2 WHERE false")
        script.add("COMMIT")
        assert await script.run(conn) == [None, [(1, "a'b")], [], None]
        broken = Script()
        broken.add("BEGIN")
        broken.add("SELECT 1 / 0")
        broken.add("COMMIT")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await broken.run(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        await conn.execute("ROLLBACK")
        assert one == 1
    finally:
        await conn.close()


async def test_outcomes_of_claims_held_here_take_one_round_trip(
    pg: PostgresStore, pg2: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sent outcome of a claim this store made is one script (BEGIN, the guard, the
    writes, COMMIT); the same outcome recorded through another store of the same queue,
    which does not hold the claim, reads the rows first: two."""
    runs: list[int] = []
    real_run = Script.run

    async def counted(self: Script, conn: psycopg.AsyncConnection[object]) -> object:
        runs.append(len(self))
        return await real_run(self, conn)

    first, second = await claimed(pg, 2)
    monkeypatch.setattr(Script, "run", counted)
    (here,) = await pg.record(
        [Outcome(first.entry_id, QueueState.SENT, token=first.token, folder="Sent Items")]
    )
    assert here.error is None
    assert len(runs) == 1
    runs.clear()
    (elsewhere,) = await pg2.record(
        [Outcome(second.entry_id, QueueState.SENT, token=second.token, folder="Sent Items")]
    )
    assert elsewhere.error is None
    assert len(runs) == 2
    for claim in (first, second):
        assert (await pg.queue_entry(claim.entry_id)).state is QueueState.SENT


async def test_a_submission_and_a_delivery_keep_hostile_text_and_recipient_order(
    pg: PostgresStore,
) -> None:
    """A submission and a received message, each one statement (``file_message``): the
    recipients come back in order with their row numbers, their hostile addresses and
    names as ``storable`` makes them, and the content byte for byte; a delivery whose
    key is stored already files nothing."""
    recipients = [
        Recipient(f"r{i}{HOSTILE}@example.test", display_name=HOSTILE, recipient_type=1 + i % 3)
        for i in range(3)
    ]
    content = b"Subject: x\r\n\r\n\x00\xff'; --\r\n"
    now = time.time()
    entry_id = await pg.submit(
        content, {PR_SUBJECT: HOSTILE}, recipients,
        submit_time=now, not_before=None, expires_at=now + 60,
    )  # fmt: skip
    stored = await pg.message(entry_id)
    assert stored.content == content
    assert stored.folder == "Outbox"
    assert [(r.row_id, r.address, r.display_name, r.recipient_type) for r in stored.recipients] == [
        (i, storable(r.address), storable(HOSTILE), r.recipient_type)
        for i, r in enumerate(recipients)
    ]
    assert (await pg.queue_entry(entry_id)).state is QueueState.QUEUED
    first, again = await pg.deliver(
        [Delivery("Inbox", content, {}, "key-1", recipients[:1]),
         Delivery("Inbox", content, {}, "key-1")]
    )  # fmt: skip
    assert first is not None
    assert again is None
    received = await pg.message(first)
    assert received.folder == "Inbox"
    assert received.content == content
    assert [r.address for r in received.recipients] == [storable(recipients[0].address)]
    assert await pg.deliver([Delivery("Inbox", content, {}, "key-1")]) == [None]


async def test_a_large_message_is_bound_by_the_server_not_as_a_literal(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submission and a delivery whose content is over ``LARGE`` keep it byte for byte,
    and the content is never bound on the client (where it would become a hex literal
    twice its size, and copies of that): its statement goes alone, bound by the server."""
    bound: list[int] = []  # per statement bound on the client: its largest bytes
    real_mogrify = psycopg.AsyncClientCursor.mogrify

    def measured(self: psycopg.AsyncClientCursor[object], query: str, params: object = None) -> str:
        values = params.values() if isinstance(params, dict) else (params or ())
        sizes = [len(v) for v in values if isinstance(v, bytes)]  # type: ignore[union-attr]
        bound.append(max(sizes, default=0))
        return real_mogrify(self, query, params)  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg.AsyncClientCursor, "mogrify", measured)
    content = b"Subject: big\r\n\r\n" + bytes(range(256)) * (4 * LARGE // 256)
    now = time.time()
    entry_id = await pg.submit(
        content, {}, [Recipient("r@example.test")],
        submit_time=now, not_before=None, expires_at=now + 60,
    )  # fmt: skip
    (received,) = await pg.deliver([Delivery("Inbox", content, {}, "big")])
    assert received is not None
    assert (await pg.message(entry_id)).content == content
    assert (await pg.message(received)).content == content
    assert (await pg.queue_entry(entry_id)).state is QueueState.QUEUED
    assert bound  # the other statements (the NOTIFY, the dedupe key) were bound on the client
    assert max(bound) <= LARGE
