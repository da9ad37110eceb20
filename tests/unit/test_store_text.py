"""No text can make a store write fail (issue #10, item 1): lone surrogates and NULs in
any text the store writes are replaced by visible escapes, in every column."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mapispool.mapi import PR_REPORT_TEXT, PR_STATUS_STRING, PR_SUBJECT
from mapispool.spi import Recipient
from mapispool.store import (
    Delivery,
    Note,
    Outcome,
    QueueState,
    RecipientOutcome,
    SqliteStore,
    Store,
)
from mapispool.store.codec import dump_props, load_props
from mapispool.store.text import storable

#: What a Latin-1 "Empfänger" becomes when decoded as UTF-8 with surrogateescape.
ESCAPED = b"Empf\xe4nger".decode("utf-8", "surrogateescape")
HOSTILE = ESCAPED + " nul\x00 lone\ud800"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = SqliteStore(tmp_path / "store.db")
    yield s
    await s.close()


async def submit(store: Store, subject: str = "hi") -> bytes:
    now = time.time()
    return await store.submit(
        b"Subject: x\r\n\r\nx\r\n",
        {PR_SUBJECT: subject},
        [Recipient("bob@example.test", display_name=subject)],
        submit_time=now,
        not_before=None,
        expires_at=now + 3600,
    )


def test_storable_escapes_visibly_and_keeps_distinct_texts_distinct() -> None:
    assert storable(HOSTILE) == "Empf\\xe4nger nul\\x00 lone\\ud800"
    assert storable("plain ascii") == "plain ascii"
    assert storable("Grüße") == "Grüße"
    a = b"key-\xe4".decode("utf-8", "surrogateescape")
    b = b"key-\xf6".decode("utf-8", "surrogateescape")
    assert storable(a) != storable(b)


async def test_every_queue_text_column_takes_hostile_text(store: Store) -> None:
    """Before the fix each of these raised UnicodeEncodeError (surrogates not allowed)."""
    entry_id = await submit(store, subject=HOSTILE)
    await store.record_one(Outcome(entry_id, QueueState.IN_FLIGHT, transport=HOSTILE))
    failed = RecipientOutcome((0,), "failed", HOSTILE, "550 " + HOSTILE)
    await store.record_one(Outcome(entry_id, recipient_outcomes=[failed]))
    await store.record_one(
        Outcome(entry_id, QueueState.RETRY, not_before=time.time(), error=HOSTILE)
    )
    await store.record_one(
        Outcome(entry_id, notes=[Note(HOSTILE, transport=HOSTILE, detail=HOSTILE)])
    )
    await store.record_one(Outcome(entry_id, declined=HOSTILE))
    entry = await store.queue_entry(entry_id)
    assert entry.last_error == storable(HOSTILE)
    assert entry.subject == storable(HOSTILE)
    ((_row, _outcome, text, _sent),) = await store.recipient_outcomes(entry_id)
    assert text == "550 " + storable(HOSTILE)
    assert (await store.events(entry_id))[-1].detail == storable(HOSTILE)


async def test_props_status_rows_state_and_keys_take_hostile_text(store: Store) -> None:
    await store.save_status_rows([{PR_STATUS_STRING: HOSTILE}], [HOSTILE])
    assert await store.load_status_rows() == [{PR_STATUS_STRING: storable(HOSTILE)}]
    await store.set_transport_state(HOSTILE, HOSTILE, {"text": HOSTILE, HOSTILE: [HOSTILE]})
    state = await store.get_transport_state(HOSTILE, HOSTILE)
    assert state == {"text": storable(HOSTILE), storable(HOSTILE): [storable(HOSTILE)]}
    await store.add_dedupe_keys([HOSTILE])
    assert await store.has_dedupe_key(HOSTILE)
    assert not await store.has_dedupe_key(HOSTILE.replace("\udce4", "\udcf6"))
    item = Delivery("Inbox", b"x\r\n", {PR_SUBJECT: HOSTILE}, dedupe_key=HOSTILE + "2")
    (entry_id,) = await store.deliver([item])
    assert entry_id is not None
    assert (await store.message(entry_id)).props[PR_SUBJECT] == storable(HOSTILE)


def test_props_with_surrogates_come_back_without_them() -> None:
    """JSON would carry a lone surrogate through and bring it back intact, to break the
    next encoder (an NDR, a log line); a store written before the fix is cleaned on load."""
    loaded = load_props(dump_props({PR_REPORT_TEXT: HOSTILE}))
    loaded[PR_REPORT_TEXT].encode("utf-8")
    old = f'{{"{PR_REPORT_TEXT}": "Empf\\udce4nger"}}'
    assert load_props(old) == {PR_REPORT_TEXT: "Empf\\xe4nger"}
