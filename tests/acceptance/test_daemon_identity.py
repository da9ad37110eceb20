"""One daemon per store file, whatever name the store is given: a symlink, a ``..`` path
or a hard link cannot start a second spooler (issue #10 item 4), and a client that names
the store through a symlink talks to the running daemon."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import message, run
from tests.acceptance.test_daemon_support import Serve, write_profile
from tests.servers.smtp import SmtpServer


@pytest.fixture
def first(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Path, Serve]]:
    """A daemon on ``tmp_path/real/store.db``, named directly."""
    profile = write_profile(tmp_path / "real", "store.db", smtp.port, eager=False)
    daemon = Serve(profile, "first").wait_started()
    try:
        yield profile, daemon
    finally:
        assert daemon.stop() == 0, daemon.text()


def _second_refused(profile: Path) -> str:
    """Start ``serve`` on ``profile``; it must exit non-zero at once; returns its log."""
    second = Serve(profile, "second")
    code = second.wait_exit(timeout=20)
    assert code != 0, second.text()
    assert "Traceback" not in second.text()
    return second.text()


def test_a_second_daemon_through_a_symlink_is_refused(
    tmp_path: Path, smtp: SmtpServer, first: tuple[Path, Serve]
) -> None:
    """A store named through a symlink is the same store: the second serve refuses."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link.db").symlink_to(tmp_path / "real" / "store.db")
    profile = write_profile(tmp_path / "elsewhere", "link.db", smtp.port)
    assert "another spooler is already running" in _second_refused(profile)


def test_a_second_daemon_through_a_dotdot_path_is_refused(
    tmp_path: Path, smtp: SmtpServer, first: tuple[Path, Serve]
) -> None:
    """``../real/store.db`` through a symlinked directory names the same file (the kernel
    resolved these before the fix too: a regression test, not a reproduction)."""
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "sub").symlink_to(tmp_path / "real")
    profile = write_profile(tmp_path / "other", "sub/../real/store.db", smtp.port)
    assert "another spooler is already running" in _second_refused(profile)


def test_a_hard_linked_store_is_refused(
    tmp_path: Path, smtp: SmtpServer, first: tuple[Path, Serve]
) -> None:
    """A hard link cannot share the lock (nor SQLite's journal): serve says so."""
    (tmp_path / "hard").mkdir()
    os.link(tmp_path / "real" / "store.db", tmp_path / "hard" / "store.db")
    profile = write_profile(tmp_path / "hard", "store.db", smtp.port)
    assert "hard links" in _second_refused(profile)


def test_a_client_through_the_symlink_talks_to_the_daemon(
    tmp_path: Path, smtp: SmtpServer, first: tuple[Path, Serve]
) -> None:
    """status, submit and flush through a symlinked store name reach the one daemon,
    and the message it sends arrives once."""
    _profile, daemon = first
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link.db").symlink_to(tmp_path / "real" / "store.db")
    linked = write_profile(tmp_path / "elsewhere", "link.db", smtp.port, eager=False)
    status = run(linked, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert "op=status" in daemon.text()
    assert run(linked, "submit", stdin=message("via link")).returncode == 0
    flushed = run(linked, "flush", "--json")
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["transports"][0]["sent"] == 1
    assert "op=flush" in daemon.text()
    assert len(smtp.messages) == 1
