"""The errors a person or a calling program sees (issue #10 item 12): conditions that pass
(a full disk, a read-only or damaged store, a daemon that went away) exit 75 so that cron
and git keep the message; each failure is one line naming what is wrong and what to do,
never a traceback; daemon logs stay one record per line."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapispool.daemon.logs import EventLog, install
from tests.acceptance.test_cli_support import command, env, message, run, sendmail

EX_USAGE = 64
EX_TEMPFAIL = 75


def loopback_profile(directory: Path, store: Path) -> Path:
    path = directory / "profile.toml"
    path.write_text(
        f'store = "{store}"\nsend_immediately = false\n\n[transports.a]\nprovider = "loopback"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs file system of our own (root only: tests run as root in CI)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_kib: int = 0) -> None:
    """Fill the file system up to ``leave_kib`` KiB of free space."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with (disk / "filler").open("wb") as out:
        out.write(b"\0" * max(0, free - leave_kib * 1024))
    with contextlib.suppress(OSError), (disk / "filler2").open("wb") as out:
        if leave_kib == 0:
            out.write(b"\0" * (1 << 20))  # the last blocks tmpfs rounds away


def one_line_error(stderr: str | bytes) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def submit_and_sendmail(profile: Path) -> list[tuple[int, str]]:
    """(exit code, stderr) of ``mapispool submit -`` and ``mapispool sendmail -t``."""
    submitted = run(profile, "submit", "-", stdin=message("kept"))
    mailed = sendmail(["--profile", str(profile), "-t"], message("kept"))
    return [
        (submitted.returncode, submitted.stderr),
        (mailed.returncode, mailed.stderr.decode()),
    ]


# -- a full disk ------------------------------------------------------------------------------


def test_a_full_disk_exits_75_for_submit_and_sendmail(small_disk: Path) -> None:
    """Disk full: exit 75 (try again later) with one line naming the store and the cause."""
    profile = loopback_profile(small_disk.parent, small_disk / "store.db")
    assert run(profile, "submit", "-", stdin=message("first")).returncode == 0
    fill(small_disk)
    for code, stderr in submit_and_sendmail(profile):
        assert code == EX_TEMPFAIL, stderr
        line = one_line_error(stderr)
        assert "full" in line
        assert str(small_disk / "store.db") in line


def test_flush_on_a_full_disk_prints_one_line_per_failure(small_disk: Path) -> None:
    """A Send/Receive whose store cannot write any more: each failure is one line (no
    traceback), the exit code says try again, and nothing queued is lost."""
    profile = loopback_profile(small_disk.parent, small_disk / "store.db")
    for subject in ("one", "two", "three"):
        assert run(profile, "submit", "-", stdin=message(subject)).returncode == 0
    fill(small_disk, leave_kib=48)
    flushed = run(profile, "flush", "--no-ui")
    assert "Traceback" not in flushed.stderr
    for line in flushed.stderr.splitlines():
        assert line.startswith("mapispool: "), flushed.stderr
    assert flushed.returncode in (0, EX_TEMPFAIL), flushed.stderr
    for name in ("filler", "filler2"):
        with contextlib.suppress(FileNotFoundError):
            (small_disk / name).unlink()
    again = run(profile, "flush", "--no-ui")
    assert again.returncode == 0, again.stderr
    listed = run(profile, "queue", "list")
    assert "empty" in listed.stdout, listed.stdout


# -- a read-only store ------------------------------------------------------------------------


def test_a_store_on_a_read_only_mount_exits_75_naming_file_and_cause(small_disk: Path) -> None:
    """An existing store on a file system remounted read-only: exit 75, one line naming
    the store file and 'read-only' (not only 'unable to open database file')."""
    store = small_disk / "store.db"
    profile = loopback_profile(small_disk.parent, store)
    assert run(profile, "submit", "-", stdin=message("first")).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for code, stderr in [*submit_and_sendmail(profile), _queue_list(profile)]:
        assert code == EX_TEMPFAIL, stderr
        line = one_line_error(stderr)
        assert str(store) in line
        assert "read-only" in line


def _queue_list(profile: Path) -> tuple[int, str]:
    done = run(profile, "queue", "list")
    return done.returncode, done.stderr


# -- a damaged store --------------------------------------------------------------------------


def test_a_damaged_store_is_one_line_naming_the_store_and_recover(tmp_path: Path) -> None:
    """Garbage over the store's pages after the first: no sqlite3.DatabaseError traceback
    but one line naming the store and how to rebuild it, exit 75 (the caller keeps the
    message)."""
    store = tmp_path / "store.db"
    profile = loopback_profile(tmp_path, store)
    for subject in ("one", "two"):
        assert run(profile, "submit", "-", stdin=message(subject)).returncode == 0
    size = store.stat().st_size
    with store.open("r+b") as out:
        out.seek(4096)
        out.write(b"\xde\xad" * ((size - 4096) // 2))
    for code, stderr in [*submit_and_sendmail(profile), _queue_list(profile)]:
        assert code == EX_TEMPFAIL, stderr
        line = one_line_error(stderr)
        assert str(store) in line
        assert "damaged" in line
        assert ".recover" in line


# -- a daemon lost in the middle of a request -------------------------------------------------


def _listening_backlog(socket_path: Path) -> int:
    """Connections waiting on the daemon's listening socket (ss's Recv-Q)."""
    done = subprocess.run(["ss", "-xlH"], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if str(socket_path) in line:
            return int(line.split()[2])
    return 0


def _wait_for(condition: object, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("way_in", ["submit", "sendmail"])
def test_a_daemon_killed_mid_request_exits_75(tmp_path: Path, way_in: str) -> None:
    """The daemon takes the connection and dies before it answers. The client wrote the
    message to the store itself before waking the daemon, so the message is safe: exit 0
    (75 would make git or cron submit it a second time) with one warning line naming the
    daemon, and the message waits in the queue for the next spooler."""
    store = tmp_path / "store.db"
    profile = loopback_profile(tmp_path, store)
    socket_path = Path(f"{store}.sock")
    daemon = subprocess.Popen(
        command(profile, "serve"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(socket_path.exists, "the daemon's socket")
        daemon.send_signal(signal.SIGSTOP)  # it accepts nothing more, and answers nothing
        if way_in == "submit":
            args = command(profile, "submit", "-")
        else:
            code = "from mapispool.cli import sendmail_main; sendmail_main()"
            args = [sys.executable, "-c", code, "--profile", str(profile), "-t"]
        with subprocess.Popen(
            args, env=env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ) as client:  # fmt: skip
            assert client.stdin is not None
            assert client.stderr is not None
            client.stdin.write(message("in flight"))
            client.stdin.close()
            _wait_for(lambda: _listening_backlog(socket_path) > 0, "the client to connect")
            daemon.kill()
            daemon.wait(timeout=30)
            err = client.stderr.read()  # to the end: the client has exited
            client.wait(timeout=60)
        assert client.returncode == 0, err
        assert b"daemon" in err.splitlines()[0]
        with sqlite3.connect(store) as conn:
            states = conn.execute("SELECT state FROM queue").fetchall()
        assert states == [("queued",)]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)


# -- usage errors -----------------------------------------------------------------------------


def test_send_at_too_far_ahead_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    """--send-at +99999999999999999999d: exit 64 naming --send-at, no 'internal error'."""
    profile = loopback_profile(tmp_path, tmp_path / "store.db")
    done = run(profile, "submit", "--send-at", "+99999999999999999999d", "-", stdin=message())
    assert done.returncode == EX_USAGE, done.stderr
    assert "--send-at" in done.stderr
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr


def test_verbose_and_quiet_are_accepted_after_the_subcommand(tmp_path: Path) -> None:
    """-v/--verbose and -q/--quiet work after the subcommand as before it."""
    profile = loopback_profile(tmp_path, tmp_path / "store.db")
    for args in (("serve", "-v", "--help"), ("queue", "list", "-v"), ("status", "-q")):
        done = run(profile, *args)
        assert done.returncode == 0, (args, done.stderr)
    quiet = run(profile, "submit", "-q", "-", stdin=message())
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


# -- structured logs --------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    loggers = [logging.getLogger(), logging.getLogger("mapispool")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_keep_tracebacks_in_one_field() -> None:
    """With --log-format json every record is one JSON line, its traceback in a field:
    ours, and another library's (asyncio's) that used to come as raw lines."""
    stream = io.StringIO()
    install(EventLog("json", stream), verbose=False)

    def fail() -> None:
        raise ValueError("line one\nline two")

    for name in ("mapispool.spooler", "asyncio"):
        try:
            fail()
        except ValueError:
            logging.getLogger(name).exception("it broke")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, stream.getvalue()
    for line, name in zip(lines, ("mapispool.spooler", "asyncio"), strict=True):
        record = json.loads(line)
        assert record["logger"] == name
        assert record["level"] == "error"
        assert "Traceback" in record["traceback"]
        assert "line two" in record["traceback"]
