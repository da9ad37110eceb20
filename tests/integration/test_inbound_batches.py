"""Inbound batches (issue #11): the imap and pop3 transports commit one FETCH / RETR batch
per ``InboundBatch.save`` (one store transaction), list a folder's sizes once, and still
change nothing on the server before the durability barrier. Real Dovecot, and the small
hostile IMAP server for counting commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    MAPI_E_TOO_BIG,
    NOTIFY_END_INBOUND_FLUSH,
    STATUS_INBOUND_FLUSH,
    MapiError,
)
from mapispool.spi import InboundBatch, InboundMessage, TransportLogon
from mapispool.transports.imap import ImapLogon, ImapSettings
from mapispool.transports.pop3 import Pop3Logon, Pop3Settings
from tests.integration import test_imap_transport as imap_tests
from tests.integration import test_pop3_transport as pop3_tests
from tests.integration.test_imap_support import MemorySupport, make_message
from tests.reliability.test_hostile_inbound import MiB, peak_of, section
from tests.servers.dovecot import DovecotServer, MailUser
from tests.servers.hostile_inbound import hostile_server, message

PASSWORD_ENV = "MAPISPOOL_TEST_BATCH_PASSWORD"


class BatchSupport(MemorySupport):
    """``MemorySupport`` with the spooler's batch save: each ``InboundBatch.save`` is one
    transaction (all of it or nothing), recorded in ``batch_saves`` by its size."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_saves: list[int] = []

    def new_batch(self) -> InboundBatch:
        async def save_many(
            messages: Sequence[InboundMessage], durable: bool
        ) -> list[bytes | None]:
            before = (list(self.messages), set(self.keys), list(self.unsynced))
            try:
                ids = [self._save(m) if durable else self._save_unsynced(m) for m in messages]
            except MapiError:
                self.messages, self.keys, self.unsynced = before  # rolled back, as SQLite does
                raise
            self.batch_saves.append(len(messages))
            return ids

        return InboundBatch(self.new_message, save_many)


async def drive_batches(logon: TransportLogon, support: BatchSupport) -> int:
    """The inbound part of FlushQueues as the spooler runs it (``start_messages``); the
    messages saved. Errors propagate after the end notification; the logon logs off."""
    await logon.flush_queues(FLUSH_DOWNLOAD)
    saved = 0
    try:
        while support.status_code & STATUS_INBOUND_FLUSH:
            batch = support.new_batch()
            await logon.start_messages(batch)
            if not batch.saved:
                break
            saved += len(batch.saved)
    finally:
        await logon.transport_notify(NOTIFY_END_INBOUND_FLUSH)
        await logon.logoff(0)
    return saved


def imap_logon(support: BatchSupport, dovecot: DovecotServer, user: MailUser, **over: Any) -> Any:
    return ImapLogon(support, ImapSettings.parse(imap_tests.settings(dovecot, user, **over)))


def pop3_logon(support: BatchSupport, dovecot: DovecotServer, user: MailUser, **over: Any) -> Any:
    return Pop3Logon(support, Pop3Settings.parse(pop3_tests.settings(dovecot, user, **over)))


@pytest.fixture
def user(dovecot_user: MailUser, monkeypatch: pytest.MonkeyPatch) -> MailUser:
    for name in (imap_tests.PASSWORD_ENV, pop3_tests.PASSWORD_ENV):
        monkeypatch.setenv(name, dovecot_user.password)
    return dovecot_user


def expected(numbers: range) -> list[bytes]:
    return sorted(make_message(n).replace(b"\r\n", b"\n") for n in numbers)


@pytest.mark.parametrize("provider", ["imap", "pop3"])
@pytest.mark.parametrize("action", ["keep", "delete"])
async def test_one_commit_per_download_batch(
    dovecot: DovecotServer, user: MailUser, provider: str, action: str
) -> None:
    """7 messages with batch_size 3: three commits of 3, 3 and 1 messages, each message
    stored once; the next flush stores nothing and commits nothing."""
    for n in range(7):
        dovecot.deliver(user, make_message(n))
    support = BatchSupport()
    make = imap_logon if provider == "imap" else pop3_logon
    assert (
        await drive_batches(make(support, dovecot, user, batch_size=3, action=action), support) == 7
    )
    assert support.batch_saves == [3, 3, 1]
    assert sorted(support.bodies()) == expected(range(7))
    if provider == "imap" or action == "delete":  # a server action, after the barrier
        assert support.unsynced == []
    assert (
        await drive_batches(make(support, dovecot, user, batch_size=3, action=action), support) == 0
    )
    assert support.batch_saves == [3, 3, 1]


@pytest.mark.parametrize("provider", ["imap", "pop3"])
async def test_a_failed_batch_commit_acts_on_nothing_of_it(
    dovecot: DovecotServer, user: MailUser, provider: str
) -> None:
    """The commit of the 2nd batch fails (nothing of it is stored); only the 1st batch,
    made durable by the barrier first, was acted on. A power loss then loses nothing
    stored, and the next flush stores the other 7 exactly once."""
    for n in range(12):
        dovecot.deliver(user, make_message(n))
    support = BatchSupport()
    make = imap_logon if provider == "imap" else pop3_logon
    support.fail_on_save = 8  # inside the 2nd batch of 5
    with pytest.raises(MapiError):
        await drive_batches(make(support, dovecot, user, batch_size=5, action="delete"), support)
    assert support.batch_saves == [5]
    assert support.unsynced == []
    support.power_loss()
    assert len(support.messages) == 5
    if provider == "pop3":  # no QUIT after the failure: the session's DELEs are undone
        assert pop3_tests.server_count(dovecot, user) == 12
    support.fail_on_save = None
    logon = make(support, dovecot, user, batch_size=5, action="delete")
    assert await drive_batches(logon, support) == 7
    assert sorted(support.bodies()) == expected(range(12))
    if provider == "pop3":
        assert pop3_tests.server_count(dovecot, user) == 0


async def test_imap_sizes_come_with_the_listing_not_per_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One ``UID FETCH n:* (RFC822.SIZE)`` lists a folder with its sizes: no SEARCH and no
    SIZE FETCH per batch (5 messages in 3 batches: 1 listing FETCH, 3 body FETCHes)."""
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    support = BatchSupport()
    with hostile_server("imap", "normal", [message(uid) for uid in range(1, 6)]) as server:
        raw = section(server, batch_size=2, idle=False, password_env=PASSWORD_ENV)
        logon = ImapLogon(support, ImapSettings.parse(raw))
        assert await drive_batches(logon, support) == 5
        fetches = [
            c.split(" ", 1)[1].upper() for c in server.commands if " UID FETCH " in c.upper()
        ]
    assert support.batch_saves == [2, 2, 1]
    assert [f for f in fetches if "BODY.PEEK[]" not in f] == ["UID FETCH 1:* (RFC822.SIZE)"]
    assert len([f for f in fetches if "BODY.PEEK[]" in f]) == 3
    assert not [c for c in server.commands if " SEARCH" in c.upper()]


async def test_pop3_pipelined_window_with_a_lying_size_is_bounded_then_the_liar_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that announces PIPELINING gets its RETRs in one write. Message 2 says
    100 bytes and sends 3 MiB: the window stops at max_message_size (memory bounded,
    nothing stored, no DELE); the next pass goes one by one and finds the liar; the one
    after leaves it on the server and stores the others."""
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    support = BatchSupport()
    messages = [message(1), message(2, body_size=3 * MiB, announced=100), message(3)]
    with hostile_server("pop3", "pipelining", messages) as server:
        raw = section(server, max_message_size=MiB, action="delete", password_env=PASSWORD_ENV)
        logon = Pop3Logon(support, Pop3Settings.parse(raw))

        async def one_pass() -> int:
            await logon.flush_queues(FLUSH_DOWNLOAD)
            saved = 0
            try:
                while support.status_code & STATUS_INBOUND_FLUSH:
                    batch = support.new_batch()
                    await logon.start_messages(batch)
                    if not batch.saved:
                        break
                    saved += len(batch.saved)
            finally:
                await logon.transport_notify(NOTIFY_END_INBOUND_FLUSH)
            return saved

        first, peak = await peak_of(one_pass())
        assert isinstance(first, MapiError)
        assert first.hresult == MAPI_E_TOO_BIG
        assert peak < 3 * MiB, peak
        pipelined = [c for c in server.commands if c.startswith("RETR")]
        assert pipelined == ["RETR 1", "RETR 2", "RETR 3"]
        second, _ = await peak_of(one_pass())
        assert isinstance(second, MapiError)
        assert "message 2" in str(second)
        assert support.messages == []
        assert not server.saw("DELE")
        retr2 = len(server.saw("RETR 2"))
        assert await one_pass() == 2
        await logon.logoff(0)
    assert [key for key, _ in support.messages] == [
        "pop3:me@127.0.0.1:uid-1",
        "pop3:me@127.0.0.1:uid-3",
    ]
    assert len(server.saw("RETR 2")) == retr2  # left on the server, not fetched again
    assert sorted(server.saw("DELE")) == ["DELE 1", "DELE 3"]


def test_a_transport_with_only_the_batch_form_receives() -> None:
    """``receives`` (which decides NOTIFY_BEGIN_INBOUND) is true for a transport that
    implements only ``start_messages``, as for one that implements ``start_message``."""

    class BatchOnly(TransportLogon):
        async def start_messages(self, batch: InboundBatch) -> None:
            del batch

    class SendOnly(TransportLogon):
        pass

    assert BatchOnly(MemorySupport()).receives
    assert not SendOnly(MemorySupport()).receives
