"""The CLI as other programs drive it: git send-email through ``mapispool sendmail``, and
progress bars on a real pseudo-terminal (and none with --no-ui or through a pipe)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.acceptance.test_cli_support import command, env, message, run, smtp_profile
from tests.servers.smtp import SmtpServer


def _need_git_send_email() -> None:
    ok = shutil.which("git") is not None and (
        subprocess.run(["git", "send-email", "--help"], capture_output=True, check=False).returncode
        == 0
    )
    if ok:
        return
    reason = "git send-email is not installed (apt-get install git-email)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true: nothing may be skipped", pytrace=False)
    pytest.skip(reason)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=env(), check=True)  # fmt: skip
    return done.stdout


def test_git_send_email_through_sendmail(tmp_path: Path, smtp: SmtpServer) -> None:
    """git send-email with sendemail.sendmailcmd = 'mapispool sendmail' queues the patch;
    mapispool flush delivers it with git's envelope."""
    _need_git_send_email()
    profile = smtp_profile(tmp_path, smtp.port)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.name", "Pat Coder")
    _git(repo, "config", "user.email", "pat@example.test")
    (repo / "hello.txt").write_text("hello\n")
    _git(repo, "add", "hello.txt")
    _git(repo, "commit", "-q", "-m", "Add hello")
    (repo / "hello.txt").write_text("hello, world\n")
    _git(repo, "commit", "-q", "-am", "Greet the world")
    [patch] = _git(repo, "format-patch", "-1", "-o", str(tmp_path)).split()
    sendmail_cmd = " ".join(shlex.quote(p) for p in command(profile, "sendmail"))
    _git(repo, "config", "sendemail.sendmailcmd", sendmail_cmd)
    _git(repo, "send-email", "--to=maintainer@example.test", "--confirm=never",
         "--no-chain-reply-to", "--suppress-cc=all", patch)  # fmt: skip
    flushed = run(profile, "flush")
    assert flushed.returncode == 0, flushed.stderr
    [received] = smtp.wait_for(1)
    assert received.mail_from == "pat@example.test"
    assert received.rcpt_tos == ("maintainer@example.test",)
    assert b"Subject: [PATCH] Greet the world" in received.data
    assert b"+hello, world" in received.data


def _flush_on_pty(profile: Path, *args: str) -> str:
    argv = command(profile, "flush", *args)
    child = pexpect.spawn(argv[0], argv[1:], env=env(), dimensions=(40, 200), timeout=30)
    output = child.read().decode("utf-8", "replace")
    child.close()
    assert child.exitstatus == 0, output
    return output


def test_progress_bar_on_a_pty(tmp_path: Path, smtp: SmtpServer) -> None:
    """On a terminal flush shows a progress bar per transport; --no-ui and a pipe do not."""
    profile = smtp_profile(tmp_path, smtp.port)
    for n in range(3):
        assert run(profile, "submit", stdin=message(f"bar {n}")).returncode == 0
    on_tty = _flush_on_pty(profile)
    assert "msgs" in on_tty
    assert "3 msgs" in on_tty
    assert "Send/Receive" in on_tty
    assert run(profile, "submit", stdin=message("quiet")).returncode == 0
    without = _flush_on_pty(profile, "--no-ui")
    assert "msgs" not in without
    assert "Send/Receive" in without
    piped = subprocess.run(command(profile, "flush"), capture_output=True, text=True,
                           env=env(), check=False)  # fmt: skip
    assert piped.returncode == 0
    assert "msgs" not in piped.stdout


def test_version_and_help() -> None:
    """--version prints the version; --help shows examples."""
    done = subprocess.run([sys.executable, "-m", "mapispool.cli", "--version"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0
    assert "mapispool" in done.stdout
    helped = run(None, "--help")
    assert "Examples:" in helped.stdout
    assert "mapispool demo" in helped.stdout
