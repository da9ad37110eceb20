"""Issue #13's bugs 1-4, each against a real SMTP server (aiosmtpd on loopback) and the
``mapispool`` command in a subprocess: header injection through sendmail and submit,
``folder show`` changing bytes, ``serve`` waiting before it sends what was queued while
it was down, and the flush summary counting a failed message as sent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import command, env, message, run, sendmail, smtp_profile
from tests.acceptance.test_daemon_support import Serve, write_profile
from tests.servers.smtp import SmtpServer


@pytest.fixture
def profile(tmp_path: Path, smtp: SmtpServer) -> Path:
    return smtp_profile(tmp_path, smtp.port)


def _one_line_error(stderr: bytes | str) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# -- bug 1: header injection ---------------------------------------------------------------


def test_sendmail_full_name_line_break_folds_to_a_space(profile: Path, smtp: SmtpServer) -> None:
    """-F with LF or CRLF cannot add a header: the line break becomes a space (as
    Postfix's sendmail does) and the whole text stays the display name of From."""
    body = b"Subject: hi\n\nhello\n"
    done = sendmail(["--profile", str(profile), "-odq", "-F",
                     "Eve\nReply-To: attacker@evil.test", "-f", "eve@example.org",
                     "bob@example.test"], body)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = sendmail(["--profile", str(profile), "-odq", "-F", "Eve\r\nBcc: victim@evil.test",
                     "-f", "eve@example.org", "bob@example.test"], body)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = sendmail(["--profile", str(profile), "-odq", "-F", "Eve\nX-Evil: 1",
                     "bob@example.test"], body)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert run(profile, "flush").returncode == 0
    first, second, third = smtp.wait_for(3)
    for received in (first, second, third):
        assert received.rcpt_tos == ("bob@example.test",)
        header = received.data.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nReply-To:" not in header
        assert not header.startswith(b"Reply-To:")
        assert b"\r\nBcc:" not in header
        assert b"\r\nX-Evil:" not in header
    assert b'From: "Eve Reply-To: attacker@evil.test" <eve@example.org>' in first.data
    assert b'From: "Eve Bcc: victim@evil.test" <eve@example.org>' in second.data
    assert "@" in third.mail_from
    assert "Eve" not in third.mail_from


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["-f", "eve@example.org\nReply-To: a@evil.test", "bob@example.test"], "-f"),
        (["-f", "eve@example.org\r\n", "bob@example.test"], "-f"),
        (["-r", "eve@example.org\nX: y", "bob@example.test"], "-r"),
        (["-f", "evil victim@example.test", "bob@example.test"], "-f"),
        (["-f", "eve@example.org", "bob@example.test\nBcc: v@evil.test"], "recipient"),
    ],
)
def test_sendmail_refuses_line_breaks_in_the_envelope(
    profile: Path, args: list[str], flag: str
) -> None:
    """A CR/LF in -f/-r or a recipient, or an -f that is not one address, is refused with
    exit 64 and one line naming the flag, even when the message has no From header."""
    done = sendmail(["--profile", str(profile), "-odq", *args], b"Subject: x\n\nbody\n")
    assert done.returncode == 64, done.stderr
    line = _one_line_error(done.stderr)
    assert flag in line
    assert "line 2 of the message header" not in line
    assert json.loads(run(profile, "queue", "list", "--json").stdout) == []


@pytest.mark.parametrize("option", ["--to", "--cc", "--bcc", "--from"])
def test_submit_refuses_line_breaks_in_addresses(profile: Path, option: str) -> None:
    """submit --to/--cc/--bcc/--from with a CR/LF: exit 64, one line naming the option."""
    done = run(profile, "submit", option, "bob@example.test\nBcc: v@evil.test", "-",
               stdin=message("x"))  # fmt: skip
    assert done.returncode == 64, done.stderr
    assert option in _one_line_error(done.stderr)
    assert json.loads(run(profile, "queue", "list", "--json").stdout) == []


# -- bug 2: folder show writes the exact bytes -------------------------------------------------


def test_folder_show_writes_the_exact_bytes(profile: Path) -> None:
    """A message whose body is not UTF-8 comes out byte for byte: on a pipe, and with
    --raw."""
    raw = (
        b"From: me@example.test\r\nTo: bob@example.test\r\nSubject: latin\r\n\r\n\xe9t\xe9 \xff\r\n"
    )
    done = subprocess.run(command(profile, "submit", "-"), input=raw, capture_output=True,
                          env=env(), check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    entry_id = done.stdout.decode().strip()
    for extra in ([], ["--raw"]):
        shown = subprocess.run(command(profile, "folder", "show", "Outbox", entry_id, *extra),
                               capture_output=True, env=env(), check=False)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.endswith(b"\xe9t\xe9 \xff\r\n")
        assert b"Subject: latin\r\n" in shown.stdout
        assert "\ufffd".encode() not in shown.stdout


# -- bug 3: serve sends at once what was queued while it was down ------------------------------


def test_serve_sends_queued_mail_at_once_on_start(tmp_path: Path, smtp: SmtpServer) -> None:
    """Mail queued with no daemon goes out as soon as serve starts, also when the profile
    sends only at Send/Receive (send_immediately = false, flush_every = 1): the first
    scheduled Send/Receive runs at start, not one period (60 s) later."""
    profile = write_profile(tmp_path, "store.db", smtp.port, eager=False)
    with profile.open("r+", encoding="utf-8") as handle:
        text = handle.read()
        handle.seek(0)
        handle.write("flush_every = 1\n" + text)
    assert run(profile, "submit", stdin=message("waiting")).returncode == 0
    daemon = Serve(profile).wait_started()
    try:
        [received] = smtp.wait_for(1, timeout=20)
        assert b"Subject: waiting" in received.data
    finally:
        daemon.stop()


# -- bug 4: the flush summary counts ------------------------------------------------------------


def test_flush_summary_counts_a_refused_message_as_failed_only(
    profile: Path, smtp: SmtpServer
) -> None:
    """One delivered and one refused with 550: sent 1, failed 1, in --json and the table."""
    assert run(profile, "submit", stdin=message("fine")).returncode == 0
    assert run(profile, "submit", stdin=message("doomed", to="nobody@example.test")).returncode == 0
    done = run(profile, "flush", "--json")
    assert done.returncode == 1, done.stderr
    [row] = json.loads(done.stdout)["transports"]
    assert (row["sent"], row["failed"]) == (1, 1)
    assert run(profile, "submit", stdin=message("fine")).returncode == 0
    assert run(profile, "submit", stdin=message("doomed", to="nobody@example.test")).returncode == 0
    table = run(profile, "flush")
    assert table.returncode == 1
    line = next(line for line in table.stdout.splitlines() if " out " in line)
    cells = [cell.strip() for cell in line.replace("│", "|").split("|") if cell.strip()]
    assert cells[:7] == ["out", "1", "0", "0", "0", "1", "0"], line
