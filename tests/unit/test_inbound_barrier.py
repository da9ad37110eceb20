"""The inbound durability barrier at the store and SPI level, and the quick header reader
of ``received_props`` against the email package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mapispool.mapi import PR_INTERNET_MESSAGE_ID, PR_SENDER_EMAIL_ADDRESS, PR_SUBJECT
from mapispool.spi import InboundMessage
from mapispool.spooler.inbound import _parsed_headers, _quick_headers, received_props
from mapispool.store import Delivery, SqliteStore


def wal_size(path: Path) -> int:
    return os.path.getsize(str(path) + "-wal")


async def test_sync_writes_a_frame_only_when_a_delivery_waits(tmp_path: Path) -> None:
    """A commit that changes nothing would sync nothing: the barrier must write."""
    store = SqliteStore(tmp_path / "s.db")
    try:
        item = Delivery("Inbox", b"Subject: a\n\nx\n", {}, dedupe_key="k1")
        await store.deliver([item], durable=False)
        before = wal_size(tmp_path / "s.db")
        await store.sync()
        assert wal_size(tmp_path / "s.db") > before
        after = wal_size(tmp_path / "s.db")
        await store.sync()  # nothing waits: no commit, no fsync
        assert wal_size(tmp_path / "s.db") == after
        assert await store.has_dedupe_key("k1")
        assert await store.get_transport_state("", "sync") is None  # the barrier leaves no row
    finally:
        await store.close()


def test_save_changes_without_an_unsynced_path_is_durable() -> None:
    calls: list[str] = []

    def save(_m: InboundMessage) -> bytes:
        calls.append("durable")
        return b"1"

    def save_unsynced(_m: InboundMessage) -> bytes:
        calls.append("unsynced")
        return b"2"

    plain = InboundMessage(save, lambda _k: False)
    plain.set_content(b"x")
    plain.save_changes(sync=False)
    both = InboundMessage(save, lambda _k: False, save_unsynced=save_unsynced)
    both.set_content(b"x")
    both.save_changes(sync=False)
    both.save_changes()
    assert calls == ["durable", "unsynced", "durable"]


SAMPLES = [
    b"From: Alice <alice@example.test>\r\nSubject: hi\r\nMessage-ID: <a.b@c>\r\n\r\nbody\r\n",
    b"From: bob@example.test\nSubject: =?utf-8?q?caf=C3=A9?=\nMessage-Id: <x@y>\n\nb\n",
    b'From: "Bob, Jr." <bob@example.test>\nSubject:  folded\n  line\t\nMessage-ID: x@y\n\n',
    b"From: undisclosed\nSubject: (c) a\\b\nMessage-ID: <a b@c> (note)\n",
    b"From: a@b.\r\nSubject:\r\n second\r\n\r\n",
    b"From mbox line\nFrom: a@b\nSubject: s\n\n",
    b"From: J\xc3\xa9r\xc3\xb4me <j@example.test>\nSubject: 8-bit \xc3\xa9\n\n",
    b"Subject: no sender\nX-Bad line\n\nbody",
    b"",
]


@pytest.mark.parametrize("content", SAMPLES)
def test_quick_headers_read_what_the_email_package_reads(content: bytes) -> None:
    slow: dict[int, object] = {}
    _parsed_headers(content, slow)
    quick: dict[int, object] = {}
    if _quick_headers(content, quick):
        assert quick == slow
    props = received_props(content, {})
    for tag in (PR_SUBJECT, PR_INTERNET_MESSAGE_ID, PR_SENDER_EMAIL_ADDRESS):
        assert props.get(tag) == slow.get(tag)
