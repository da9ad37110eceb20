"""The daemon's control socket against hostile input and hostile neighbours (issue #10
items 5 and 10): an over-long or malformed request line gets a clear error reply and no
traceback; a socket at ``<store>.sock`` that another user owns, or where another user's
process listens, is never sent a byte, and the message stays safe in our store."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import message, run, sendmail
from tests.acceptance.test_daemon_support import Serve, write_profile
from tests.servers.smtp import SmtpServer


@pytest.fixture
def daemon(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Path, Serve]]:
    profile = write_profile(tmp_path, "store.db", smtp.port, eager=False)
    serve = Serve(profile).wait_started()
    try:
        yield profile, serve
    finally:
        assert serve.stop() == 0, serve.text()


def _exchange(path: Path, payload: bytes) -> list[dict[str, object]]:
    """Send raw bytes to the socket, then read answer lines until it closes or 10 s pass."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


#: Longer than any request line the daemon reads (``server.MAX_REQUEST``, 4 MiB).
LONG_LINE = 8 * 1024 * 1024


def test_an_over_long_request_line_gets_a_clear_error(daemon: tuple[Path, Serve]) -> None:
    """A line longer than the daemon reads is answered with one error (the client, still
    sending it, sees no broken pipe), and the next request on the same connection is
    answered; no traceback in the daemon's log."""
    profile, serve = daemon
    sock = profile.parent / "store.db.sock"
    for size in (LONG_LINE, 4 * 1024 * 1024 + 1):
        line = b'{"op":"submit","params":{"content":"' + b"A" * size + b'"}}\n'
        answers = _exchange(sock, line + b'{"op":"ping","params":{}}\n')
        assert [a["ok"] for a in answers] == [False, True]
        assert "longer than" in str(answers[0]["error"])
    assert "Traceback" not in serve.text()


@pytest.mark.parametrize(
    "line",
    [b"not json\n", b"\xff\xfe\x00garbage\n", b"[1, 2]\n", b'{"op": 7}\n', b'{"op":"submit"}\n'],
    ids=["text", "not-utf8", "array", "op-not-a-name", "missing-params"],
)
def test_a_malformed_request_gets_a_clear_error(daemon: tuple[Path, Serve], line: bytes) -> None:
    """Each malformed line is answered with ``ok: false`` and a message; the same
    connection then still answers a good request."""
    profile, serve = daemon
    answers = _exchange(profile.parent / "store.db.sock", line + b'{"op":"ping","params":{}}\n')
    assert [a["ok"] for a in answers] == [False, True]
    error = answers[0]["error"]
    assert isinstance(error, dict)
    assert error["message"]
    assert "Traceback" not in serve.text()


# -- someone else's socket -------------------------------------------------------------------

FAKE_DAEMON = textwrap.dedent(
    """
    import os, pwd, socket, sys
    path, owner = sys.argv[1], sys.argv[2]
    nobody = pwd.getpwnam("nobody")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o666)
    if owner == "nobody":
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    listener.listen()  # SO_PEERCRED reports who called listen(): nobody
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        data = conn.recv(1 << 20)
        if data:
            print("got", len(data), flush=True)
            conn.sendall(b'{"ok": true, "result": "00"}\\n')
        conn.close()
    """
)


@pytest.fixture(params=["nobody", "root"], ids=["file-owned-by-nobody", "listener-is-nobody"])
def stranger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A fake daemon running as ``nobody`` at ``tmp_path/store.db.sock``: its socket file
    is chowned to nobody, or left to root (then only ``SO_PEERCRED`` tells)."""
    if os.geteuid() != 0:
        pytest.skip("running a listener as another user needs root")
    pwd.getpwnam("nobody")
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_DAEMON, str(tmp_path / "store.db.sock"), request.param],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    assert fake.stdout.readline().strip() == "ready"
    try:
        yield fake
    finally:
        fake.send_signal(signal.SIGKILL)
        fake.wait()


def _heard(fake: subprocess.Popen[str]) -> str:
    """What the fake daemon received (it is stopped first)."""
    fake.send_signal(signal.SIGKILL)
    out, _err = fake.communicate()
    return out


def test_sendmail_sends_nothing_to_a_strangers_socket(
    tmp_path: Path, smtp: SmtpServer, stranger: subprocess.Popen[str]
) -> None:
    """sendmail queues in our store, warns about the socket, and the stranger hears
    nothing; a later flush sends the message."""
    profile = write_profile(tmp_path, "store.db", smtp.port, eager=False)
    done = sendmail(["--profile", str(profile), "bob@example.test"], message("secret"))
    assert done.returncode == 0, done.stderr
    assert b"not using the control socket" in done.stderr
    assert "got" not in _heard(stranger)
    queued = json.loads(run(profile, "queue", "list", "--json").stdout)
    assert [e["subject"] for e in queued] == ["secret"]
    assert run(profile, "flush").returncode == 0
    [sent] = smtp.wait_for(1)
    assert b"Subject: secret" in sent.data


def test_commands_do_not_talk_to_a_strangers_socket(
    tmp_path: Path, smtp: SmtpServer, stranger: subprocess.Popen[str]
) -> None:
    """submit, status and queue list work in-process beside a stranger's socket."""
    profile = write_profile(tmp_path, "store.db", smtp.port, eager=False)
    submitted = run(profile, "submit", stdin=message("mine"))
    assert submitted.returncode == 0, submitted.stderr
    assert "not using the control socket" in submitted.stderr
    assert run(profile, "status", "--json").returncode == 0
    assert len(json.loads(run(profile, "queue", "list", "--json").stdout)) == 1
    assert "got" not in _heard(stranger)
