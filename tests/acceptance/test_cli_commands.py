"""The ``mapispool`` command in a subprocess: each command against a real SMTP server on
loopback (aiosmtpd in this process) and a store in a temporary directory."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import message, run, sendmail, smtp_profile
from tests.servers.smtp import SmtpServer


@pytest.fixture
def profile(tmp_path: Path, smtp: SmtpServer) -> Path:
    return smtp_profile(tmp_path, smtp.port)


def test_demo_exits_0_and_prints_tables() -> None:
    """The README's first command works with no account and shows what arrived where."""
    done = run(None, "demo", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Send/Receive" in done.stdout
    assert "Status table" in done.stdout
    assert "Sent Items" in done.stdout
    assert "Inbox" in done.stdout


def test_submit_then_flush_delivers(profile: Path, smtp: SmtpServer) -> None:
    """submit queues (printing the hex entry id) and flush sends it, exit 0."""
    done = run(profile, "submit", "-", stdin=message("first"))
    assert done.returncode == 0, done.stderr
    entry_id = done.stdout.strip()
    assert len(entry_id) == 32
    assert int(entry_id, 16) >= 0
    assert smtp.messages == []
    flushed = run(profile, "flush")
    assert flushed.returncode == 0, flushed.stderr + flushed.stdout
    assert "msgs" not in flushed.stdout  # a pipe gets no progress bar
    [received] = smtp.wait_for(1)
    assert received.rcpt_tos == ("bob@example.test",)
    assert b"Subject: first" in received.data


def test_flush_exits_non_zero_when_a_recipient_fails(profile: Path, smtp: SmtpServer) -> None:
    """A refused recipient makes the flush's exit code non-zero; the summary says failed."""
    assert run(profile, "submit", stdin=message("doomed", to="nobody@example.test")).returncode == 0
    flushed = run(profile, "flush", "--json")
    assert flushed.returncode == 1, flushed.stderr
    result = json.loads(flushed.stdout)
    assert result["ok"] is False
    assert result["transports"][0]["failed"] == 1


def test_submit_with_recipients_and_send_later(profile: Path) -> None:
    """--to overrides the headers; --send-at +10m defers the message."""
    done = run(profile, "submit", "--to", "carol@example.test", "--send-at", "+10m",
               stdin=message("later"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    [entry] = json.loads(run(profile, "queue", "list", "--json").stdout)
    assert entry["state"] == "deferred"
    assert entry["recipients"] == ["SMTP:carol@example.test"]
    assert entry["entry_id"] == done.stdout.strip()


MBOX_LINE = b"From me@example.test Sat Nov 21 08:00:00 2026\n"


def test_sendmail_with_t_and_with_arguments(profile: Path, smtp: SmtpServer) -> None:
    """sendmail -t takes recipients from headers; without -t the arguments are the envelope;
    a leading mbox "From " line is dropped, as sendmail does."""
    body = b"To: bob@example.test\nBcc: hidden@example.test\nSubject: via -t\n\nhi\n.\nafter\n"
    done = sendmail(["--profile", str(profile), "-t", "-oi", "-odi", "-oem", "-v"], body)
    assert done.returncode == 0, done.stderr
    done = run(profile, "sendmail", "-f", "me@example.test", "-F", "Me Myself", "-i",
               "dave@example.test",
               stdin=MBOX_LINE + b"Subject: via args\n\nhello\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert run(profile, "flush").returncode == 0
    first, second = smtp.wait_for(2)
    assert sorted(first.rcpt_tos) == ["bob@example.test", "hidden@example.test"]
    assert b"after" in first.data
    assert b"Bcc" not in first.data
    assert second.rcpt_tos == ("dave@example.test",)
    assert second.mail_from == "me@example.test"
    assert b"From: Me Myself <me@example.test>" in second.data
    assert b"From me@example.test Sat" not in second.data  # the mbox "From " line is dropped


def test_sendmail_exit_codes(profile: Path, tmp_path: Path) -> None:
    """sysexits: no recipients 64, empty input 66, missing profile 78."""
    assert sendmail(["--profile", str(profile)], b"Subject: x\n\n").returncode == 64
    assert sendmail(["--profile", str(profile), "bob@example.test"], b"").returncode == 66
    missing = tmp_path / "missing.toml"
    assert sendmail(["--profile", str(missing), "-t"], b"To: a@b.test\n\nx\n").returncode == 78


def test_status_json_parses(profile: Path) -> None:
    """status --json lists the spooler's row and the transport's, bits spelled out."""
    done = run(profile, "status", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["name"] for r in rows] == ["Spooler", "out"]
    assert "STATUS_AVAILABLE" in rows[1]["status_bits"]


def test_queue_hold_release_cancel(profile: Path) -> None:
    """queue hold/release/cancel change the state; a unique hex prefix is enough."""
    entry_id = run(profile, "submit", stdin=message("managed")).stdout.strip()
    assert run(profile, "queue", "hold", entry_id[:8]).returncode == 0
    [entry] = json.loads(run(profile, "queue", "list", "--json").stdout)
    assert entry["state"] == "held"
    assert run(profile, "queue", "release", entry_id).returncode == 0
    [entry] = json.loads(run(profile, "queue", "list", "--json").stdout)
    assert entry["state"] == "queued"
    shown = run(profile, "queue", "show", entry_id)
    assert "managed" in shown.stdout
    assert run(profile, "queue", "cancel", entry_id).returncode == 0
    assert json.loads(run(profile, "queue", "list", "--json").stdout) == []
    deleted = json.loads(run(profile, "folder", "show", "Deleted Items", "--json").stdout)
    assert [m["entry_id"] for m in deleted] == [entry_id]


def test_folder_list_and_show(profile: Path, smtp: SmtpServer) -> None:
    """After a flush the message is in Sent Items; folder show ENTRY prints its content."""
    entry_id = run(profile, "submit", stdin=message("filed")).stdout.strip()
    assert run(profile, "flush").returncode == 0
    folders = {
        f["name"]: f["count"] for f in json.loads(run(profile, "folder", "list", "--json").stdout)
    }
    assert folders["Sent Items"] == 1
    listed = run(profile, "folder", "show", "Sent Items")
    assert "filed" in listed.stdout
    content = run(profile, "folder", "show", "Sent Items", entry_id[:6])
    assert "Subject: filed" in content.stdout


def test_errors_are_one_line(tmp_path: Path) -> None:
    """A missing profile is one line on stderr, no traceback, exit 78 (EX_CONFIG)."""
    done = run(tmp_path / "nope.toml", "status")
    assert done.returncode == 78
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "mapispool init" in done.stderr


def test_init_creates_a_0600_file(tmp_path: Path) -> None:
    """init writes a loadable profile with mode 0600 and refuses to overwrite."""
    path = tmp_path / "new.toml"
    args = ("init", "--template", "smtp-imap", "--smtp-host", "smtp.example.test",
            "--imap-host", "imap.example.test", "--username", "me@example.test")  # fmt: skip
    done = run(path, *args)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run(path, *args).returncode != 0
    assert run(path, *args, "--force").returncode == 0
    maildir = tmp_path / "md.toml"
    made = run(maildir, "init", "--template", "maildir", "--maildir", str(tmp_path / "Mail"))
    assert made.returncode == 0, made.stderr
