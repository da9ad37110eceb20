"""Issue #13's bug 5, errors that hid failures: each against a real SMTP server (aiosmtpd
on loopback, with AUTH where the password matters, or a closed port for a server that is
down) and the ``mapispool`` command in a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import command, env, message, run, sendmail, smtp_profile
from tests.servers._util import free_port
from tests.servers.smtp import SmtpServer

PASSWORD_ENV = "MAPISPOOL_R1_SMTP_PASSWORD"


@pytest.fixture
def auth_smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(auth=("me", "right"), auth_required=True, auth_require_tls=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def auth_profile(tmp: Path, port: int) -> Path:
    path = smtp_profile(tmp, port)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(
            f'username = "me"\npassword_env = "{PASSWORD_ENV}"\nallow_plaintext_auth = true\n'
        )
    return path


@pytest.fixture
def wrong_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")


def test_flush_with_a_wrong_password_fails_and_says_why(
    tmp_path: Path, auth_smtp: SmtpServer, wrong_password: None
) -> None:
    """flush --upload with a wrong SMTP password: exit 1, ok false, the cause named."""
    profile = auth_profile(tmp_path, auth_smtp.port)
    assert run(profile, "submit", stdin=message("locked out")).returncode == 0
    done = run(profile, "flush", "--upload", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False
    [row] = result["transports"]
    assert "535" in row["error"] or "auth" in row["error"].lower(), row
    table = run(profile, "flush", "--upload", "--force")
    assert table.returncode == 1
    assert "535" in table.stderr or "auth" in table.stderr.lower(), table.stderr


def test_status_without_a_daemon_is_not_available_with_a_wrong_password(
    tmp_path: Path, auth_smtp: SmtpServer, wrong_password: None
) -> None:
    """status (no daemon) checks the transport, so a wrong password shows as a failure."""
    profile = auth_profile(tmp_path, auth_smtp.port)
    done = run(profile, "status", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)[1]
    assert "STATUS_AVAILABLE" not in row["status_bits"], row
    assert "STATUS_FAILURE" in row["status_bits"], row


def test_flush_says_why_with_the_server_down_then_names_the_retry_wait(
    tmp_path: Path,
) -> None:
    """Server down: the flush names the reason. Server back: a plain flush sends nothing
    before the retry time and says so, with --force as the way out; --force sends."""
    port = free_port()
    profile = smtp_profile(tmp_path, port)
    assert run(profile, "submit", stdin=message("patient")).returncode == 0
    down = run(profile, "flush", "--upload")
    assert "out" in down.stderr
    assert re.search(r"refused|unreachable|connect", down.stderr, re.I), down.stderr
    server = SmtpServer().start()
    smtp_profile(tmp_path, server.port)  # the server is back (at another port)
    try:
        again = run(profile, "flush", "--upload")
        assert re.search(r"1 message waits for retry until \d\d:\d\d; --force sends now",
                         again.stderr), again.stderr  # fmt: skip
        assert server.messages == []
        forced = run(profile, "flush", "--upload", "--force")
        assert forced.returncode == 0, forced.stderr
        server.wait_for(1)
        assert "wait for retry" not in forced.stderr
    finally:
        server.stop()


def test_last_error_is_the_failure_and_is_cleared_once_sent(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """A failed message shows why in last_error; a sent one keeps no stale error."""
    profile = smtp_profile(tmp_path, smtp.port)
    failed_id = run(profile, "submit", stdin=message("doomed", to="nobody@example.test")).stdout
    smtp.handler.mail_answer = "451 4.3.0 try later"
    later_id = run(profile, "submit", stdin=message("later")).stdout
    run(profile, "flush", "--upload")
    smtp.handler.mail_answer = None
    run(profile, "flush", "--upload", "--force")
    entries = {e["entry_id"]: e for e in json.loads(run(profile, "queue", "list", "--all",
                                                        "--json").stdout)}  # fmt: skip
    failed, sent = entries[failed_id.strip()], entries[later_id.strip()]
    assert failed["state"] == "failed"
    assert "550" in (failed["last_error"] or ""), failed
    assert sent["state"] == "sent"
    assert sent["last_error"] is None, sent


def test_cli_errors_do_not_use_python_api_wording(tmp_path: Path, smtp: SmtpServer) -> None:
    """A message with no recipients: the CLI's error says what to do on the command line."""
    profile = smtp_profile(tmp_path, smtp.port)
    done = run(profile, "submit", "-", stdin=b"Subject: nobody\n\nhi\n")
    assert done.returncode == 64
    assert "recipients=[" not in done.stderr
    assert "--to" in done.stderr


def test_init_store_path_is_relative_to_the_current_directory(tmp_path: Path) -> None:
    """init --store u1/x.db --profile u1/p.toml puts the store at ./u1/x.db."""
    done = subprocess.run(
        [*command(Path("u1/p.toml"), "init", "--template", "maildir", "--maildir",
                  str(tmp_path / "Maildir"), "--store", "u1/x.db")],
        cwd=tmp_path, capture_output=True, text=True, env=env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    queued = subprocess.run(
        command(Path("u1/p.toml"), "submit", "--to", "bob@example.test", "-"),
        cwd=tmp_path, input=message("where").decode(), capture_output=True, text=True,
        env=env(), check=False,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    assert (tmp_path / "u1" / "x.db").exists()
    assert not (tmp_path / "u1" / "u1").exists()


def test_ndr_copies_the_original_header_lines_as_they_were(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """The NDR's text/rfc822-headers part is the original header, not a re-rendering."""
    profile = smtp_profile(tmp_path, smtp.port)
    original = (b"From: Me <me@example.test>\nTo: Nobody <nobody@example.test> (the one)\n"
                b"Subject: bounce me\n\nhello\n")  # fmt: skip
    assert run(profile, "submit", "-", stdin=original).returncode == 0
    run(profile, "flush", "--upload")
    [ndr] = json.loads(run(profile, "folder", "show", "Inbox", "--json").stdout)
    shown = subprocess.run(command(profile, "folder", "show", "Inbox", ndr["entry_id"], "--raw"),
                           capture_output=True, env=env(), check=False).stdout  # fmt: skip
    assert b"To: Nobody <nobody@example.test> (the one)" in shown
    assert b"To: <>" not in shown


def test_message_ids_use_the_sender_domain_or_the_host(tmp_path: Path, smtp: SmtpServer) -> None:
    """Message-IDs are @ the sender's domain, never @mapispool.invalid."""
    profile = smtp_profile(tmp_path, smtp.port)
    assert run(profile, "submit", stdin=message("with id")).returncode == 0
    done = sendmail(["--profile", str(profile), "-odq", "-f", "eve@example.org",
                     "bob@example.test"], b"Subject: x\n\nhi\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    run(profile, "flush", "--upload")
    first, second = smtp.wait_for(2)
    assert re.search(rb"Message-ID: <[^>]+@example\.test>", first.data), first.data
    assert re.search(rb"Message-ID: <[^>]+@example\.org>", second.data), second.data
    assert b"mapispool.invalid" not in first.data + second.data
