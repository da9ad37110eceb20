"""Messages of any size go through a running daemon (issue #10 item 5): ``submit`` and
``sendmail`` write them to the store and only wake the daemon, so nothing near asyncio's
64 KiB line limit crosses the control socket, and the bytes arrive intact."""

from __future__ import annotations

import base64
import hashlib
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import command, env, sendmail
from tests.acceptance.test_daemon_support import Serve, wait_until, write_profile
from tests.servers.smtp import SmtpServer

SIZES = {"60KB": 60_000, "5MB": 5_000_000, "30MB": 30_000_000}


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Path]:
    """A daemon that sends as messages arrive; yields its profile."""
    profile = write_profile(tmp_path_factory.mktemp("large"), "store.db", smtp.port)
    daemon = Serve(profile).wait_started()
    try:
        yield profile
    finally:
        assert daemon.stop() == 0, daemon.text()
        assert "Traceback" not in daemon.text()


def _message(subject: str, size: int) -> tuple[bytes, bytes]:
    """A message whose body is about ``size`` bytes of 76-column base64 lines; returns
    the whole message and its body exactly as a server must receive it."""
    raw = random.Random(size).randbytes(size * 3 // 4)
    text = base64.b64encode(raw)
    body = b"".join(text[i : i + 76] + b"\r\n" for i in range(0, len(text), 76))
    head = f"From: me@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\n"
    return head.encode() + body, body


def _arrived(smtp: SmtpServer, subject: str) -> bytes:
    """The DATA of the one accepted message with this subject (waits for it)."""
    marker = f"Subject: {subject}\r\n".encode()

    def found() -> list[bytes]:
        return [t.data for t in smtp.messages if marker in t.data[: t.data.find(b"\r\n\r\n") + 2]]

    wait_until(lambda: bool(found()), timeout=180)
    [data] = found()
    return data


def _same_body(data: bytes, body: bytes) -> None:
    received = data.split(b"\r\n\r\n", 1)[1]
    assert len(received) == len(body)
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
def test_submit_through_the_daemon(served: Path, smtp: SmtpServer, size: str) -> None:
    """``mapispool submit`` with a daemon running: exit 0, the message arrives intact."""
    content, body = _message(f"submit {size}", SIZES[size])
    done = subprocess.run(
        command(served, "submit", "-"), input=content, capture_output=True, env=env(), timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    _same_body(_arrived(smtp, f"submit {size}"), body)


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
def test_sendmail_through_the_daemon(served: Path, smtp: SmtpServer, size: str) -> None:
    """``mapispool-sendmail -t -i`` with a daemon running: exit 0, the message arrives
    intact."""
    content, body = _message(f"sendmail {size}", SIZES[size])
    done = sendmail(["--profile", str(served), "-t", "-i"], content, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    _same_body(_arrived(smtp, f"sendmail {size}"), body)
