"""The imap transport against a real Dovecot on 127.0.0.1, driven through the SPI the way
the spooler drives it (``MemorySupport`` stands in for the store)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import imapclient  # type: ignore[import-untyped]
import pytest

from mapispool.mapi import (
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_INBOUND_ACTIVE,
    MapiError,
)
from mapispool.transports.imap import ImapLogon, ImapSettings
from tests.integration.test_imap_support import MemorySupport, drive_flush, make_message
from tests.servers.dovecot import DovecotServer, MailUser

PASSWORD_ENV = "MAPISPOOL_TEST_IMAP_PASSWORD"


@pytest.fixture
def user(dovecot_user: MailUser, monkeypatch: pytest.MonkeyPatch) -> MailUser:
    monkeypatch.setenv(PASSWORD_ENV, dovecot_user.password)
    return dovecot_user


def settings(dovecot: DovecotServer, user: MailUser, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": dovecot.host,
        "port": dovecot.imap_port,
        "tls": "none",
        "allow_plaintext_auth": True,
        "username": user.name,
        "password_env": PASSWORD_ENV,
        "timeout": 10,
        "connect_timeout": 5,
    }
    base.update(over)
    return base


def logon_for(support: MemorySupport, raw: dict[str, Any]) -> ImapLogon:
    return ImapLogon(support, ImapSettings.parse(raw))


@pytest.fixture
def raw_imap(dovecot: DovecotServer, user: MailUser) -> Iterator[Any]:
    client = imapclient.IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=10)
    client.login(user.name, user.password)
    yield client
    client.logout()


def flags_of(client: Any, folder: str = "INBOX") -> list[tuple[bytes, ...]]:
    client.select_folder(folder)
    data = client.fetch(client.search(["ALL"]), ["FLAGS"])
    return [data[uid][b"FLAGS"] for uid in sorted(data)]


async def run(logon: ImapLogon, support: MemorySupport) -> int:
    try:
        return await drive_flush(logon, support)
    finally:
        await logon.logoff(0)


async def test_each_message_is_downloaded_once_across_flushes(
    dovecot: DovecotServer, user: MailUser, raw_imap: Any
) -> None:
    """With action=keep, a second flush downloads nothing again, and only new mail later."""
    for n in range(5):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user, batch_size=2))
    assert await drive_flush(logon, support) == 5
    assert await drive_flush(logon, support) == 0
    dovecot.deliver(user, make_message(5))
    dovecot.deliver(user, make_message(6))
    assert await run(logon, support) == 2
    assert sorted(support.bodies()) == sorted(
        make_message(n).replace(b"\r\n", b"\n") for n in range(7)
    )
    assert len(support.keys) == 7
    assert all(key.startswith(f"imap:{user.name}@{dovecot.host}/INBOX:") for key in support.keys)
    assert all(b"\\Seen" in flags for flags in flags_of(raw_imap))
    assert "Received 2 new message(s)" in support.status_string
    assert support.status_code & STATUS_AVAILABLE
    assert not support.status_code & STATUS_INBOUND_ACTIVE


async def test_restart_after_a_crash_mid_batch_loses_and_duplicates_nothing(
    dovecot: DovecotServer, user: MailUser, raw_imap: Any
) -> None:
    """A save that fails in the middle of a batch leaves the committed ones committed and
    the server untouched for the rest; a new logon (a restarted process) finishes the job."""
    for n in range(10):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    support.fail_on_save = 4
    logon = logon_for(support, settings(dovecot, user, action="delete", batch_size=5))
    with pytest.raises(MapiError):
        await run(logon, support)
    assert len(support.messages) == 3
    raw_imap.select_folder("INBOX")
    assert len(raw_imap.search(["ALL"])) == 10  # nothing deleted before the batch ended
    assert "Last error" in support.status_string

    support.fail_on_save = None
    restarted = logon_for(support, settings(dovecot, user, action="delete", batch_size=5))
    assert await run(restarted, support) == 7
    assert sorted(support.bodies()) == sorted(
        make_message(n).replace(b"\r\n", b"\n") for n in range(10)
    )
    raw_imap.select_folder("INBOX")
    assert raw_imap.search(["ALL"]) == []


async def test_connection_lost_mid_batch_then_next_flush_completes(
    dovecot: DovecotServer, user: MailUser
) -> None:
    """Dovecot restarting between two batches fails the flush with a network error; the
    next flush brings the rest, each message exactly once."""
    for n in range(6):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()

    def restart_after_third(count: int) -> None:
        if count == 3:
            dovecot.restart()

    support.on_save = restart_after_third
    logon = logon_for(support, settings(dovecot, user, batch_size=3))
    with pytest.raises(MapiError) as caught:
        await drive_flush(logon, support)
    assert caught.value.hresult in (MAPI_E_NETWORK_ERROR, 0x80040401)
    assert isinstance(caught.value.__cause__, Exception)
    support.on_save = None
    assert await run(logon, support) == 3
    assert len(support.messages) == 6
    assert len(set(support.bodies())) == 6


async def test_uidvalidity_change_rebaselines_without_duplicates_or_losses(
    dovecot: DovecotServer, user: MailUser
) -> None:
    """After the mailbox is recreated (new UIDVALIDITY), messages already stored are
    recognised by Message-ID and size; only the genuinely new one is downloaded."""
    for n in range(4):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user))
    assert await run(logon, support) == 4

    folder = dovecot.folder_path(user)
    for index_file in folder.glob("dovecot*"):
        index_file.unlink()
    await asyncio.sleep(1.1)  # Dovecot derives a new UIDVALIDITY from the clock
    dovecot.deliver(user, make_message(99))

    restarted = logon_for(support, settings(dovecot, user))
    assert await run(restarted, support) == 1
    assert len(support.messages) == 5
    assert support.bodies()[-1] == make_message(99).replace(b"\r\n", b"\n")
    assert "UIDVALIDITY of INBOX changed" in support.status_string
    again = logon_for(support, settings(dovecot, user))
    assert await run(again, support) == 0


async def test_delete_action_removes_only_committed_messages(
    dovecot: DovecotServer, user: MailUser, raw_imap: Any
) -> None:
    """action=delete expunges exactly what was committed."""
    for n in range(3):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    assert await run(logon_for(support, settings(dovecot, user, action="delete")), support) == 3
    raw_imap.select_folder("INBOX")
    assert raw_imap.search(["ALL"]) == []


async def test_move_action_files_messages_into_move_to(
    dovecot: DovecotServer, user: MailUser, raw_imap: Any
) -> None:
    """action=move moves committed messages to move_to, creating the folder if needed."""
    for n in range(3):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    raw = settings(dovecot, user, action="move", move_to="Archive")
    assert await run(logon_for(support, raw), support) == 3
    raw_imap.select_folder("INBOX")
    assert raw_imap.search(["ALL"]) == []
    raw_imap.select_folder("Archive")
    assert len(raw_imap.search(["ALL"])) == 3


async def test_several_folders_each_keyed_by_folder(dovecot: DovecotServer, user: MailUser) -> None:
    """Every listed folder is read; dedupe keys name the folder."""
    dovecot.deliver(user, make_message(1))
    dovecot.deliver(user, make_message(2), folder="Lists")
    support = MemorySupport()
    raw = settings(dovecot, user, folders=["INBOX", "Lists"])
    assert await run(logon_for(support, raw), support) == 2
    assert {k.split("/")[1].split(":")[0] for k in support.keys} == {"INBOX", "Lists"}


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls_verified_against_the_test_ca(
    dovecot: DovecotServer, user: MailUser, tls: str
) -> None:
    """Implicit TLS and STARTTLS both verify the server against ca_file."""
    dovecot.deliver(user, make_message(1))
    port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
    raw = settings(dovecot, user, tls=tls, port=port, ca_file=str(dovecot.ca_file))
    del raw["allow_plaintext_auth"]
    support = MemorySupport()
    assert await run(logon_for(support, raw), support) == 1


async def test_wrong_ca_fails_with_a_clear_error(
    dovecot: DovecotServer, user: MailUser, tmp_path: Any
) -> None:
    """A server certificate from another CA is refused, and the error says what to fix."""
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    raw = settings(dovecot, user, tls="implicit", port=dovecot.imaps_port, ca_file=str(other))
    support = MemorySupport()
    logon = logon_for(support, raw)
    with pytest.raises(MapiError) as caught:
        await run(logon, support)
    assert caught.value.hresult == MAPI_E_NETWORK_ERROR
    assert "not trusted" in str(caught.value)
    assert "ca_file" in str(caught.value)


async def test_wrong_password_is_a_logon_failure_without_the_secret(
    dovecot: DovecotServer, user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused LOGIN is MAPI_E_LOGON_FAILED with the server's reply; the secret is
    nowhere in the error or the status row."""
    monkeypatch.setenv(PASSWORD_ENV, "wrong-secret-value")
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user))
    with pytest.raises(MapiError) as caught:
        await run(logon, support)
    assert caught.value.hresult == MAPI_E_LOGON_FAILED
    assert caught.value.reply
    assert "wrong-secret-value" not in str(caught.value)
    assert "wrong-secret-value" not in support.status_string
    await logon.validate_state(0)
    assert support.status_code & STATUS_FAILURE


async def test_poll_counts_new_mail_and_idle_is_bounded(
    dovecot: DovecotServer, user: MailUser
) -> None:
    """poll() says how many messages wait; with nothing waiting it returns within the
    IDLE bound, and returns early when mail arrives during IDLE."""
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user))
    try:
        started = time.monotonic()
        assert await logon.poll() == 0
        assert time.monotonic() - started < 6
        dovecot.deliver(user, make_message(1))
        dovecot.deliver(user, make_message(2))
        assert await logon.poll() == 2
        assert await drive_flush(logon, support) == 2
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, dovecot.deliver, user, make_message(3))
        started = time.monotonic()
        assert await logon.poll() >= 1
        assert time.monotonic() - started < 3
        await logon.validate_state(0)
        assert support.status_code & STATUS_AVAILABLE
    finally:
        await logon.logoff(0)


@pytest.mark.parametrize("action", ["delete", "keep"])
async def test_no_server_action_before_the_durability_barrier(
    dovecot: DovecotServer, user: MailUser, raw_imap: Any, action: str
) -> None:
    """Messages are committed with save_changes(sync=False); the server action (expunge
    or \\Seen) for a batch only comes after Support.sync() made every commit durable.
    A power loss after some unsynced commits loses those commits but not the server
    copies, so the restarted logon stores every message exactly once."""
    for n in range(12):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user, action=action, batch_size=5))
    acted: list[int] = []

    def guard(name: str) -> None:
        real = getattr(logon._conn, name)

        def checked(uids: list[int], *args: Any) -> None:
            assert support.unsynced == [], f"{name} before the barrier"
            acted.extend(uids)
            real(uids, *args)

        setattr(logon._conn, name, checked)

    guard("delete")
    guard("mark_seen")
    support.fail_on_save = 8  # dies in the 2nd batch: saves 6 and 7 are not synced yet
    with pytest.raises(MapiError):
        await run(logon, support)
    assert len(support.unsynced) == 2
    assert support.syncs >= 1
    assert len(acted) == 5  # only the first batch, after its barrier
    support.power_loss()
    assert len(support.messages) == 5
    raw_imap.select_folder("INBOX")
    assert len(raw_imap.search(["ALL"])) == (7 if action == "delete" else 12)

    support.fail_on_save = None
    restarted = logon_for(support, settings(dovecot, user, action=action, batch_size=5))
    assert await run(restarted, support) == 7
    assert support.unsynced == []
    assert sorted(support.bodies()) == sorted(
        make_message(n).replace(b"\r\n", b"\n") for n in range(12)
    )
    raw_imap.select_folder("INBOX")
    if action == "delete":
        assert raw_imap.search(["ALL"]) == []
    else:
        assert all(b"\\Seen" in flags for flags in flags_of(raw_imap))
