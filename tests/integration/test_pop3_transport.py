"""The pop3 transport against a real Dovecot on 127.0.0.1, driven through the SPI the way
the spooler drives it (``MemorySupport`` stands in for the store)."""

from __future__ import annotations

import poplib
from typing import Any

import pytest

from mapispool.mapi import (
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    MapiError,
)
from mapispool.transports.pop3 import Pop3Logon, Pop3Settings
from tests.integration.test_imap_support import MemorySupport, drive_flush, make_message
from tests.servers.dovecot import DovecotServer, MailUser

PASSWORD_ENV = "MAPISPOOL_TEST_POP3_PASSWORD"


@pytest.fixture
def user(dovecot_user: MailUser, monkeypatch: pytest.MonkeyPatch) -> MailUser:
    monkeypatch.setenv(PASSWORD_ENV, dovecot_user.password)
    return dovecot_user


def settings(dovecot: DovecotServer, user: MailUser, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": dovecot.host,
        "port": dovecot.pop3_port,
        "tls": "none",
        "allow_plaintext_auth": True,
        "username": user.name,
        "password_env": PASSWORD_ENV,
        "timeout": 10,
        "connect_timeout": 5,
    }
    base.update(over)
    return base


def logon_for(support: MemorySupport, raw: dict[str, Any]) -> Pop3Logon:
    return Pop3Logon(support, Pop3Settings.parse(raw))


def server_count(dovecot: DovecotServer, user: MailUser) -> int:
    pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        pop.user(user.name)
        pop.pass_(user.password)
        return pop.stat()[0]
    finally:
        pop.quit()


async def run(logon: Pop3Logon, support: MemorySupport) -> int:
    try:
        return await drive_flush(logon, support)
    finally:
        await logon.logoff(0)


def expected(numbers: range) -> list[bytes]:
    return sorted(make_message(n).replace(b"\r\n", b"\n") for n in numbers)


async def test_keep_downloads_each_message_once(dovecot: DovecotServer, user: MailUser) -> None:
    """With action=keep, known UIDLs are skipped on later flushes; only new mail comes."""
    for n in range(5):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user, batch_size=2))
    assert await drive_flush(logon, support) == 5
    saves = support.saves
    assert await drive_flush(logon, support) == 0
    assert support.saves == saves  # nothing was even offered to the store again
    dovecot.deliver(user, make_message(5))
    assert await run(logon, support) == 1
    assert sorted(support.bodies()) == expected(range(6))
    assert all(k.startswith(f"pop3:{user.name}@{dovecot.host}:") for k in support.keys)
    assert server_count(dovecot, user) == 6
    assert support.status_code & STATUS_AVAILABLE


async def test_delete_after_commit_and_crash_mid_batch(
    dovecot: DovecotServer, user: MailUser
) -> None:
    """A save failing mid-batch deletes nothing on the server (no QUIT, DELEs undone);
    the restarted logon deletes the committed ones without RETR and downloads the rest."""
    for n in range(8):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    support.fail_on_save = 5
    logon = logon_for(support, settings(dovecot, user, action="delete", batch_size=3))
    with pytest.raises(MapiError):
        await run(logon, support)
    assert len(support.messages) == 4
    assert server_count(dovecot, user) == 8
    support.fail_on_save = None
    restarted = logon_for(support, settings(dovecot, user, action="delete", batch_size=3))
    assert await run(restarted, support) == 4
    assert sorted(support.bodies()) == expected(range(8))
    assert server_count(dovecot, user) == 0


async def test_connection_lost_mid_batch_then_next_flush_completes(
    dovecot: DovecotServer, user: MailUser
) -> None:
    """Dovecot restarting during a pass fails it with a network error; nothing is lost
    or duplicated, and the next flush completes it."""
    for n in range(6):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()

    def restart_after_second(count: int) -> None:
        if count == 2:
            dovecot.restart()

    support.on_save = restart_after_second
    logon = logon_for(support, settings(dovecot, user, action="delete", batch_size=2))
    with pytest.raises(MapiError) as caught:
        await drive_flush(logon, support)
    assert caught.value.hresult == MAPI_E_NETWORK_ERROR
    support.on_save = None
    assert await run(logon, support) == 4
    assert sorted(support.bodies()) == expected(range(6))
    assert server_count(dovecot, user) == 0


async def test_oversize_message_is_left_and_reported(
    dovecot: DovecotServer, user: MailUser
) -> None:
    """A message over max_size is not downloaded, stays on the server, and the status row
    names it."""
    dovecot.deliver(user, make_message(1))
    dovecot.deliver(user, make_message(2, tag="big", size=5000))
    support = MemorySupport()
    raw = settings(dovecot, user, action="delete", max_size=2000)
    assert await run(logon_for(support, raw), support) == 1
    assert server_count(dovecot, user) == 1
    assert "over max_message_size" in support.status_string
    assert "big 2" in support.status_string


@pytest.mark.parametrize("tls", ["implicit", "stls"])
async def test_tls_verified_against_the_test_ca(
    dovecot: DovecotServer, user: MailUser, tls: str
) -> None:
    """Implicit TLS and STLS both verify the server against ca_file."""
    dovecot.deliver(user, make_message(1))
    port = dovecot.pop3s_port if tls == "implicit" else dovecot.pop3_port
    raw = settings(dovecot, user, tls=tls, port=port, ca_file=str(dovecot.ca_file))
    del raw["allow_plaintext_auth"]
    support = MemorySupport()
    assert await run(logon_for(support, raw), support) == 1


async def test_wrong_ca_fails_with_a_clear_error(
    dovecot: DovecotServer, user: MailUser, tmp_path: Any
) -> None:
    """A certificate from another CA is refused with a message that says what to fix."""
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    raw = settings(dovecot, user, tls="implicit", port=dovecot.pop3s_port, ca_file=str(other))
    support = MemorySupport()
    with pytest.raises(MapiError) as caught:
        await run(logon_for(support, raw), support)
    assert caught.value.hresult == MAPI_E_NETWORK_ERROR
    assert "not trusted" in str(caught.value)


async def test_wrong_password_is_a_logon_failure_without_the_secret(
    dovecot: DovecotServer, user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused PASS is MAPI_E_LOGON_FAILED with the reply; the secret never shows."""
    monkeypatch.setenv(PASSWORD_ENV, "wrong-secret-value")
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user))
    with pytest.raises(MapiError) as caught:
        await run(logon, support)
    assert caught.value.hresult == MAPI_E_LOGON_FAILED
    assert caught.value.reply
    assert "wrong-secret-value" not in str(caught.value) + support.status_string
    await logon.validate_state(0)
    assert support.status_code & STATUS_FAILURE
    await logon.logoff(0)


async def test_poll_counts_unknown_messages(dovecot: DovecotServer, user: MailUser) -> None:
    """poll() counts messages whose UIDL is not committed yet."""
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user))
    try:
        assert await logon.poll() == 0
        dovecot.deliver(user, make_message(1))
        dovecot.deliver(user, make_message(2))
        assert await logon.poll() == 2
        assert await drive_flush(logon, support) == 2
        assert await logon.poll() == 0
    finally:
        await logon.logoff(0)


async def test_no_dele_before_the_durability_barrier(
    dovecot: DovecotServer, user: MailUser
) -> None:
    """DELE only follows Support.sync(): a power loss after unsynced commits keeps the
    server copies, and the restarted logon stores each message exactly once."""
    for n in range(8):
        dovecot.deliver(user, make_message(n))
    support = MemorySupport()
    logon = logon_for(support, settings(dovecot, user, action="delete", batch_size=3))
    real = logon._conn.delete
    deleted: list[int] = []

    def checked(numbers: list[int]) -> None:
        assert support.unsynced == [], "DELE before the barrier"
        deleted.extend(numbers)
        real(numbers)

    logon._conn.delete = checked  # type: ignore[method-assign]
    support.fail_on_save = 6  # dies in the 2nd batch: save 4 and 5 are not synced yet
    with pytest.raises(MapiError):
        await run(logon, support)
    assert len(support.unsynced) == 2
    assert deleted == [1, 2, 3]
    support.power_loss()
    assert len(support.messages) == 3
    assert server_count(dovecot, user) == 8  # the session died: no QUIT, DELEs undone

    support.fail_on_save = None
    restarted = logon_for(support, settings(dovecot, user, action="delete", batch_size=3))
    assert await run(restarted, support) == 5
    assert sorted(support.bodies()) == expected(range(8))
    assert server_count(dovecot, user) == 0
