"""Security: TLS verified by default, no AUTH in clear unless the profile says so, secrets
never shown anywhere, private files, and a warning for a profile that exposes secrets."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile, ProfileError
from mapispool.session import Session
from mapispool.store import QueueState
from tests.servers.smtp import SmtpServerFactory

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Kn0wn-S3cret-9f2c"
MESSAGE = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nhi\r\n"


def test_failing_auth_never_shows_the_password(
    tmp_path: Path, smtp_server_factory: SmtpServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A flush whose AUTH is refused, with the password inline in the profile: the secret
    appears in no log record, status row, queue entry, event, flush result, store file, or
    the output of the mapispool command (flush, status, queue; JSON and text)."""
    server = smtp_server_factory(tls="starttls", auth=("user", "the-right-one"))
    profile_path = tmp_path / "profile.toml"
    profile_path.write_text(
        f'store = "{tmp_path / "store.db"}"\nsend_immediately = false\n'
        f'[transports.out]\nprovider = "smtp"\nhost = "{server.host}"\nport = {server.port}\n'
        f'tls = "starttls"\nca_file = "{server.ca_file}"\nusername = "user"\n'
        f'password = "{SECRET}"\n'
    )
    profile_path.chmod(0o600)
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with Session.logon(profile_path) as session:
        entry_id = session.submit(MESSAGE)
        result = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        seen.append(json.dumps({k: v.as_dict() for k, v in result.transports.items()}))
        seen += [repr(dict(row)) for row in session.status_table()]
        entry = session.queue_entry(entry_id)
        assert entry.state is QueueState.RETRY
        seen.append(json.dumps(entry.as_dict()))
        seen += [repr(e) for e in session.call(lambda s: s.store.events(entry_id))]
    seen += [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for args in (["flush", "--json"], ["flush"], ["status", "--json"], ["queue"], ["-v", "flush"]):
        done = subprocess.run(
            [sys.executable, "-m", "mapispool.cli", "--profile", str(profile_path), *args],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        seen += [done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")]
    assert any("auth" in text.lower() or "logon" in text.lower() for text in seen)
    for text in seen:
        assert SECRET not in text
    for path in tmp_path.glob("store.db*"):
        assert SECRET.encode() not in path.read_bytes()


@pytest.mark.parametrize("provider", ["smtp", "imap", "pop3"])
def test_auth_over_plaintext_needs_an_explicit_setting(provider: str) -> None:
    """tls = "none" with a username: refused at load, naming allow_plaintext_auth; with it
    set, accepted. TLS verification is on by default."""
    section: dict[str, Any] = {
        "provider": provider,
        "host": "127.0.0.1",
        "port": 2525,
        "tls": "none",
        "username": "u",
        "password_env": "X",
    }
    with pytest.raises(ProfileError, match="allow_plaintext_auth"):
        Profile.from_dict({"transports": {"t": section}})
    loaded = Profile.from_dict({"transports": {"t": {**section, "allow_plaintext_auth": True}}})
    assert loaded.transports[0].settings["allow_plaintext_auth"] is True


def test_tls_is_verified_by_default(tmp_path: Path, smtp_server_factory: SmtpServerFactory) -> None:
    """STARTTLS to a server whose certificate does not chain to a trusted CA: the message
    waits to be retried, and the transport's row says the certificate did not verify."""
    server = smtp_server_factory(tls="starttls")
    data = {
        "store": str(tmp_path / "store.db"),
        "send_immediately": False,
        "transports": {"out": {"provider": "smtp", "host": server.host, "port": server.port}},
    }
    with Session.logon(Profile.from_dict(data)) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        entry = session.queue_entry(entry_id)
        assert entry.state is QueueState.RETRY
        assert entry.last_error is not None
        assert "certificate" in entry.last_error.lower()
    assert server.messages == []


@pytest.mark.sqlite_only("the SQLite file's permissions")
def test_store_files_are_private(tmp_path: Path) -> None:
    """The store, its WAL and shared-memory files and its lock are readable by the owner
    only, whatever the umask."""
    old = os.umask(0o022)
    try:
        data = {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {"a": {"provider": "loopback"}},
        }
        with Session.logon(Profile.from_dict(data)) as session:
            session.submit(MESSAGE)
            files = list(tmp_path.glob("store.db*"))
            assert {p.name for p in files} >= {"store.db", "store.db-wal", "store.db.lock"}
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name
    finally:
        os.umask(old)


def test_profile_readable_by_others_with_a_secret_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An inline password in a group- or world-readable profile: a warning naming the key
    and the fix (chmod 600 or a password reference), never the secret itself. No warning
    for a private file, or for secrets given by reference."""
    path = tmp_path / "profile.toml"
    inline = (
        f'[transports.out]\nprovider = "smtp"\nhost = "h"\nusername = "u"\npassword = "{SECRET}"\n'
    )
    path.write_text(inline)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="mapispool.profile"):
        Profile.load(path)
    (record,) = caplog.records
    assert "transports.out.password" in record.getMessage()
    assert "chmod 600" in record.getMessage()
    assert SECRET not in record.getMessage()
    caplog.clear()
    path.chmod(0o600)
    Profile.load(path)
    path.write_text(inline.replace(f'password = "{SECRET}"', 'password_env = "SMTP_PASSWORD"'))
    path.chmod(0o644)
    Profile.load(path)
    assert caplog.records == []
