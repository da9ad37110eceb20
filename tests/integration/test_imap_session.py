"""End to end through the public API: Session + spooler + SQLite store + the imap and pop3
transports against a real Dovecot. A flush run twice, a process killed in the middle of
a batch and a UIDVALIDITY change must all leave every message in the Inbox exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import FLUSH_DOWNLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from tests.conftest import StoreBackend
from tests.integration.test_imap_support import make_message
from tests.servers.dovecot import DovecotServer, MailUser

PASSWORD_ENV = "MAPISPOOL_TEST_E2E_PASSWORD"

# Runs one flush in a child process and SIGKILLs it right after the N-th local commit:
# the closest thing to pulling the plug in the middle of a batch.
_KILLER = """
import json, os, signal, sys
from mapispool.mapi import FLUSH_DOWNLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.spi import messages

# mark_saved runs once per committed message, saved alone or in a batch.
original = messages.InboundMessage.mark_saved
count = 0

def mark_saved(self, entry_id):
    global count
    original(self, entry_id)
    count += 1
    if count == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

messages.InboundMessage.mark_saved = mark_saved
with Session.logon(Profile.from_dict(json.loads(sys.argv[1]))) as session:
    session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
"""


@pytest.fixture
def user(dovecot_user: MailUser, monkeypatch: pytest.MonkeyPatch) -> MailUser:
    monkeypatch.setenv(PASSWORD_ENV, dovecot_user.password)
    return dovecot_user


def profile_dict(
    backend: StoreBackend, dovecot: DovecotServer, user: MailUser, provider: str, **over: Any
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "provider": provider,
        "host": dovecot.host,
        "port": dovecot.imap_port if provider == "imap" else dovecot.pop3_port,
        "tls": "none",
        "allow_plaintext_auth": True,
        "username": user.name,
        "password_env": PASSWORD_ENV,
        "timeout": 10,
    }
    section.update(over)
    return {
        **backend.options(),
        "send_immediately": False,
        "transports": {"in": section},
    }


def flush(data: dict[str, Any]) -> list[bytes]:
    with Session.logon(Profile.from_dict(data)) as session:
        session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
        return [m.content.replace(b"\r\n", b"\n") for m in session.folder("Inbox").messages()]


def expected(numbers: range) -> list[bytes]:
    return sorted(make_message(n).replace(b"\r\n", b"\n") for n in numbers)


@pytest.mark.parametrize("provider", ["imap", "pop3"])
def test_two_flushes_store_each_message_once(
    store_backend: StoreBackend, dovecot: DovecotServer, user: MailUser, provider: str
) -> None:
    """Mail waiting in Dovecot lands in the Inbox once, however often we flush."""
    for n in range(5):
        dovecot.deliver(user, make_message(n))
    data = profile_dict(store_backend, dovecot, user, provider, batch_size=2)
    assert sorted(flush(data)) == expected(range(5))
    assert sorted(flush(data)) == expected(range(5))
    dovecot.deliver(user, make_message(5))
    assert sorted(flush(data)) == expected(range(6))


@pytest.mark.parametrize(
    ("provider", "action"),
    [("imap", "keep"), ("imap", "delete"), ("pop3", "keep"), ("pop3", "delete")],
)
def test_process_killed_mid_batch_then_restarted(
    store_backend: StoreBackend, dovecot: DovecotServer, user: MailUser, provider: str, action: str
) -> None:
    """SIGKILL after the 7th commit of a 20-message flush; the next session ends with all
    20 in the Inbox exactly once (and, with delete, an empty mailbox)."""
    for n in range(20):
        dovecot.deliver(user, make_message(n))
    data = profile_dict(store_backend, dovecot, user, provider, batch_size=5, action=action)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.run(
        [sys.executable, "-c", _KILLER, json.dumps(data), "7"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr.decode(errors="replace")[-2000:]
    assert sorted(flush(data)) == expected(range(20))
    assert sorted(flush(data)) == expected(range(20))
    if action == "delete":
        assert dovecot.message_files(user) == []


def test_imap_uidvalidity_change_keeps_inbox_exact(
    store_backend: StoreBackend, dovecot: DovecotServer, user: MailUser
) -> None:
    """Recreating the mailbox index (new UIDVALIDITY) neither duplicates nor loses mail."""
    for n in range(4):
        dovecot.deliver(user, make_message(n))
    data = profile_dict(store_backend, dovecot, user, "imap")
    assert sorted(flush(data)) == expected(range(4))
    for index_file in dovecot.folder_path(user).glob("dovecot*"):
        index_file.unlink()
    time.sleep(1.1)  # Dovecot derives the new UIDVALIDITY from the clock
    dovecot.deliver(user, make_message(4))
    assert sorted(flush(data)) == expected(range(5))
