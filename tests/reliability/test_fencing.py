"""Issue #11/#12, DESIGN §9: every completion carries its claim's fencing token. A worker
whose claim was taken over while its transport held the message (it paused past its
lease, or was cut off) has its late outcome refused by the store: it never overwrites the
newer attempt, is logged as a warning and dropped (no retry by this worker, no error on
the spooler's row). Runs the real spooler with a scripted transport on every backend;
the takeover is another store handle (another worker) repairing the expired claim and
claiming the message again while the transport is inside ``submit_message``."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mapispool.mapi import (
    FLUSH_UPLOAD,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_NOT_FOUND,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SUBJECT,
    MapiError,
)
from mapispool.profile import Profile
from mapispool.spooler.engine import Spooler
from mapispool.store import Claim, Outcome, QueueState, RecipientOutcome, Route, Store
from mapispool.store.memory import MemoryStore
from mapispool.store.model import Recipient
from mapispool.store.sqlite import SqliteStore
from mapispool.testing import Action, Meanwhile, Raise, TransportScript

#: Far past any lease the spooler takes: "now" for a worker that paused that long.
LATER = 3600.0

SUBJECT = "Fenced"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def two_workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    """Two handles on one store: the spooler's and another worker's."""
    if request.param == "memory":
        name = f"memory:{uuid.uuid4().hex}"
        first, second = await MemoryStore.open(name), await MemoryStore.open(name)
    elif request.param == "sqlite":
        path = str(tmp_path / "store.db")
        first, second = await SqliteStore.open(path), await SqliteStore.open(path)
    else:
        from mapispool.store.postgres import PostgresStore

        where = request.getfixturevalue("pg_store")
        first = await PostgresStore.open(where.url, schema=where.schema)
        second = await PostgresStore.open(where.url, schema=where.schema)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


async def _submit(store: Store) -> bytes:
    now = time.time()
    content = (
        f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {SUBJECT}\r\n"
        "Message-ID: <fenced@example.test>\r\n\r\nHello.\r\n"
    ).encode()
    props = {PR_SUBJECT: SUBJECT, PR_SENDER_EMAIL_ADDRESS: "alice@example.test"}
    return await store.submit(
        content, props, [Recipient("bob@example.test")],
        submit_time=now, not_before=None, expires_at=now + 86400,
    )  # fmt: skip


class TakeOver:
    """The other worker: once the spooler's transport holds the message, the spooler's
    lease counts as run out; the other worker repairs the claim (``recover`` with a time
    after the lease), claims the message and, with ``finish``, records its own attempt's
    outcome at once (else it still holds the message in flight afterwards)."""

    def __init__(self, other: Store, *, finish: bool) -> None:
        self.other = other
        self.finish = finish
        self.claims: list[Claim] = []

    async def __call__(self, entry_id: bytes) -> None:
        repaired = await self.other.recover(parked=False, now=time.time() + LATER)
        assert repaired["requeued"] == 1, repaired
        route = Route("a", (("a", ("SMTP",)),))
        self.claims = await self.other.claim(route, now=time.time())
        assert [c.entry_id for c in self.claims] == [entry_id]
        if self.finish:
            await self.second_outcome()

    async def second_outcome(self) -> None:
        """The other worker's attempt ends in a retry with an error of its own."""
        (claim,) = self.claims
        await self.other.record_one(
            Outcome(claim.entry_id, QueueState.RETRY, token=claim.token,
                    not_before=time.time() + LATER, error="the second worker's attempt",
                    transport="a")
        )  # fmt: skip


class TakeOverAndSend(TakeOver):
    """The other worker sends the message and deletes it (PR_DELETE_AFTER_SUBMIT)."""

    async def second_outcome(self) -> None:
        (claim,) = self.claims
        rows = tuple(r.row_id for r in claim.recipients)
        await self.other.record_one(
            Outcome(claim.entry_id, QueueState.SENT, token=claim.token, delete=True,
                    recipient_outcomes=[RecipientOutcome(rows, "delivered", "a")])
        )  # fmt: skip


@contextlib.asynccontextmanager
async def _spooler_sent(store: Store, tmp_path: Path, then: Action | None, take_over: TakeOver,
                        caplog: pytest.LogCaptureFixture) -> AsyncIterator[bytes]:  # fmt: skip
    """A spooler on ``store`` whose transport meets ``take_over`` inside submit_message,
    then does ``then``; yields the message's entry id after one upload flush, while the
    spooler still runs (its shutdown repairs whatever is in flight on a one-spooler
    store, the other worker's claim included)."""
    script = TransportScript().on(SUBJECT, Meanwhile(take_over, then=then))
    profile = Profile.from_dict(
        {
            "store": str(tmp_path / "unused.db"),
            "send_immediately": False,
            "transports": {"a": {"provider": "recording", "script": script}},
        }
    )
    spooler = Spooler(profile, store)
    await spooler.start()
    try:
        entry_id = await _submit(store)
        with caplog.at_level(logging.WARNING, logger="mapispool.spooler"):
            await spooler.flush(FLUSH_UPLOAD)
        assert [c.method for c in script.journal.of("a", "submit_message")] == ["submit_message"]
        assert not spooler.supervisor.failures  # a dropped outcome is no error row
        yield entry_id
    finally:
        await spooler.shutdown()


def _assert_dropped(entry_id: bytes, caplog: pytest.LogCaptureFixture) -> None:
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(entry_id.hex() in w and "another worker" in w for w in warnings), warnings


@pytest.mark.parametrize("then", [None, Raise(MAPI_E_NETWORK_ERROR)], ids=["taken", "error"])
async def test_a_late_outcome_does_not_overwrite_the_newer_attempts(
    two_workers: tuple[Store, Store],
    tmp_path: Path,
    then: Action | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The other worker recorded its attempt's retry while the first transport still
    held the message; the first attempt's outcome (sent, or a retry of its own) is
    refused: the message keeps the second attempt's state and error, no recipient of it
    is marked delivered, and it is never sent by the first worker."""
    store, other = two_workers
    take_over = TakeOver(other, finish=True)
    async with _spooler_sent(store, tmp_path, then, take_over, caplog) as entry_id:
        entry = await store.queue_entry(entry_id, with_recipients=False)
        assert entry.state is QueueState.RETRY
        assert entry.last_error == "the second worker's attempt"
        assert [o for _row, o, _t, _s in await store.recipient_outcomes(entry_id)] == [None]
        kinds = [e.kind for e in await store.events(entry_id)]
        assert "sent" not in kinds, kinds
        assert "handed-over" not in kinds, kinds
        _assert_dropped(entry_id, caplog)


async def test_the_new_claim_still_records_after_a_late_outcome(
    two_workers: tuple[Store, Store], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The other worker still holds the message when the first attempt ends well: the
    first attempt's "sent" is refused (the message stays in flight under the new claim),
    and the other worker's own outcome, recorded afterwards with its token, is taken."""
    store, other = two_workers
    take_over = TakeOver(other, finish=False)
    async with _spooler_sent(store, tmp_path, None, take_over, caplog) as entry_id:
        entry = await store.queue_entry(entry_id, with_recipients=False)
        assert entry.state is QueueState.IN_FLIGHT
        assert [o for _row, o, _t, _s in await store.recipient_outcomes(entry_id)] == [None]
        _assert_dropped(entry_id, caplog)
        await take_over.second_outcome()
        entry = await store.queue_entry(entry_id, with_recipients=False)
        assert entry.state is QueueState.RETRY
        assert entry.last_error == "the second worker's attempt"


@pytest.mark.parametrize("then", [None, Raise(MAPI_E_NETWORK_ERROR)], ids=["taken", "error"])
async def test_a_late_outcome_for_a_message_the_other_worker_sent_and_deleted(
    two_workers: tuple[Store, Store],
    tmp_path: Path,
    then: Action | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The newer attempt sent the message and deleted it (PR_DELETE_AFTER_SUBMIT): the
    first attempt's late outcome is dropped the same way, with no error on the spooler's
    row and no message put back."""
    store, other = two_workers
    take_over = TakeOverAndSend(other, finish=True)
    async with _spooler_sent(store, tmp_path, then, take_over, caplog) as entry_id:
        with pytest.raises(MapiError) as info:
            await store.queue_entry(entry_id)
        assert info.value.hresult == MAPI_E_NOT_FOUND
        _assert_dropped(entry_id, caplog)
