"""No text can make a store write fail (issue #10, item 1): lone surrogates and NULs in
any text the store writes are replaced by visible escapes, in every column."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapispool.mapi import PR_REPORT_TEXT, PR_STATUS_STRING, PR_SUBJECT
from mapispool.spi import Recipient
from mapispool.store import QueueState, Store
from mapispool.store.codec import dump_props, load_props
from mapispool.store.text import storable

#: What a Latin-1 "Empfänger" becomes when decoded as UTF-8 with surrogateescape.
ESCAPED = b"Empf\xe4nger".decode("utf-8", "surrogateescape")
HOSTILE = ESCAPED + " nul\x00 lone\ud800"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def submit(store: Store, subject: str = "hi") -> bytes:
    now = time.time()
    return store.submit(
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


def test_every_queue_text_column_takes_hostile_text(store: Store) -> None:
    """Before the fix each of these raised UnicodeEncodeError (surrogates not allowed)."""
    entry_id = submit(store, subject=HOSTILE)
    store.transition(entry_id, QueueState.IN_FLIGHT, transport=HOSTILE)
    store.set_recipient_outcome(entry_id, [0], "failed", transport=HOSTILE,
                                report_text="550 " + HOSTILE)  # fmt: skip
    store.transition(entry_id, QueueState.RETRY, not_before=time.time(), error=HOSTILE)
    store.log_event(entry_id, HOSTILE, transport=HOSTILE, detail=HOSTILE)
    store.add_declined(entry_id, HOSTILE)
    entry = store.queue_entry(entry_id)
    assert entry.last_error == storable(HOSTILE)
    assert entry.subject == storable(HOSTILE)
    ((_row, _outcome, text, _sent),) = store.recipient_outcomes(entry_id)
    assert text == "550 " + storable(HOSTILE)
    assert store.events(entry_id)[-1].detail == storable(HOSTILE)


def test_props_status_rows_state_and_keys_take_hostile_text(store: Store) -> None:
    store.save_status_rows([{PR_STATUS_STRING: HOSTILE}], [HOSTILE])
    assert store.load_status_rows() == [{PR_STATUS_STRING: storable(HOSTILE)}]
    store.set_transport_state(HOSTILE, HOSTILE, {"text": HOSTILE, HOSTILE: [HOSTILE]})
    state = store.get_transport_state(HOSTILE, HOSTILE)
    assert state == {"text": storable(HOSTILE), storable(HOSTILE): [storable(HOSTILE)]}
    store.add_dedupe_keys([HOSTILE])
    assert store.has_dedupe_key(HOSTILE)
    assert not store.has_dedupe_key(HOSTILE.replace("\udce4", "\udcf6"))
    entry_id = store.deliver("Inbox", b"x\r\n", {PR_SUBJECT: HOSTILE}, dedupe_key=HOSTILE + "2")
    assert entry_id is not None
    assert store.message(entry_id).props[PR_SUBJECT] == storable(HOSTILE)


def test_props_with_surrogates_come_back_without_them() -> None:
    """JSON would carry a lone surrogate through and bring it back intact, to break the
    next encoder (an NDR, a log line); a store written before the fix is cleaned on load."""
    loaded = load_props(dump_props({PR_REPORT_TEXT: HOSTILE}))
    loaded[PR_REPORT_TEXT].encode("utf-8")
    old = f'{{"{PR_REPORT_TEXT}": "Empf\\udce4nger"}}'
    assert load_props(old) == {PR_REPORT_TEXT: "Empf\\xe4nger"}
