"""``mapispool-sendmail`` handing its invocation to a running ``mapispool serve`` (#13).

The client imports almost nothing; the daemon runs the same argument rules, canonical form
and submit rows; the exit code and the stderr lines come back. Exactly once: the client's
submission id is committed with the message, and when the answer is lost (the daemon
killed with SIGKILL mid-request, or a server that closes without answering, before or
after committing) the client queues the message itself with that id: it is stored once.
The entry point runs in a subprocess, as mutt and cron run it."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapispool.cli.sendmail_args import _WITH_VALUE, parse_args
from mapispool.cli.sendmail_client import WITH_VALUE, handoff_socket, handoff_sockets, scan_args
from mapispool.cli.sendmail_fast import DaemonStore
from mapispool.cli.sendmail_run import run
from mapispool.cli.sendmail_served import read_request
from tests.acceptance.test_cli_support import env, sendmail, smtp_profile
from tests.acceptance.test_daemon_support import Serve, wait_until
from tests.acceptance.test_sendmail_fast import CASES, _rows, _through_the_full_path

#: What the client may import beyond a bare interpreter's modules.
CLIENT_MODULES = {"__future__", "_socket", "_struct", "struct", "binascii", "mapispool",
                  "mapispool.cli", "mapispool.cli.sendmail_client", "mapispool.daemon",
                  "mapispool.daemon.trust"}  # fmt: skip

#: Prints the modules of a bare interpreter, runs the entry point, prints the modules.
_WATCHED = """
import sys
before = sorted(sys.modules)
from mapispool.cli import sendmail_main
try:
    sendmail_main()
finally:
    sys.stdout.write(" ".join(before) + "\\n" + " ".join(sorted(sys.modules)) + "\\n")
"""


class Daemon(Serve):
    """``mapispool serve`` that has bound its hand-off socket."""

    def wait_handoff(self) -> Daemon:
        self.wait_started()
        wait_until(lambda: "event=sendmail-handoff" in self.text(), timeout=30)
        return self

    def handled(self) -> int:
        return self.text().count("handled=True")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Daemon]]:
    profile = smtp_profile(tmp_path, 9)  # send_immediately false: the queue stays put
    serving = Daemon(profile).wait_handoff()
    try:
        yield profile, serving
    finally:
        assert serving.stop() == 0, serving.text()


def _queued(store: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(store)
    try:
        rows = conn.execute("SELECT q.state, m.subject FROM queue q JOIN messages m "
                            "ON m.id = q.message_id").fetchall()  # fmt: skip
        return [(str(state), str(subject)) for state, subject in rows]
    finally:
        conn.close()


def _keys(store: Path) -> list[str]:
    conn = sqlite3.connect(store)
    try:
        return [k for (k,) in conn.execute("SELECT key FROM dedupe WHERE key LIKE 'sendmail:%'")]
    finally:
        conn.close()


def test_the_handoff_stores_the_rows_of_the_full_path(
    tmp_path: Path, daemon: tuple[Path, Daemon]
) -> None:
    """Every hostile and ordinary case of round 1, handed to the daemon: the rows are
    those of the application layer's submit, plus one submission key per message."""
    profile, serving = daemon
    full_dir = tmp_path / "full"
    full_dir.mkdir()
    full_profile = smtp_profile(full_dir, 9)
    for _name, args, message in CASES:
        done = sendmail(["--profile", str(profile), "-odq", *args], message)
        assert done.returncode == 0, done.stderr
        assert _through_the_full_path(full_profile, args, message) == 0
    assert serving.handled() == len(CASES), serving.text()
    handed = _rows(tmp_path / "store.db", generated=True)
    keys = handed.pop("dedupe")
    assert len(keys) == len(CASES)
    assert all(str(row["key"]).startswith("sendmail:") for row in keys)
    full = _rows(full_dir / "store.db", generated=True)
    assert full.pop("dedupe") == []
    assert handed == full


def test_refusals_and_the_callers_environment_through_the_daemon(
    tmp_path: Path, daemon: tuple[Path, Daemon]
) -> None:
    """The #13 refusals keep their exit codes and lines when the daemon runs them; a
    message without From takes the caller's login name, not the daemon's."""
    profile, serving = daemon
    at = ["--profile", str(profile)]
    done = sendmail([*at, "-f", "a@x\r\nBcc: v@x", "bob@x.test"], b"Subject: x\n\nhi\n")
    assert (done.returncode, done.stderr.count(b"\n")) == (64, 1), done.stderr
    assert done.stderr.startswith(b"sendmail: -f")
    done = sendmail([*at, "-t", "-oi"], b"Subject: nobody\n\nhi\n")
    assert done.returncode == 64, done.stderr
    assert b"no recipients" in done.stderr
    done = sendmail([*at, "-oi", "bob@x.test"], b"\n \n")
    assert done.returncode == 66, done.stderr
    assert serving.handled() == 3, serving.text()
    caller = {**env(), "LOGNAME": "handoff-caller", "USER": "handoff-caller"}
    done = subprocess.run(
        [sys.executable, "-c", "from mapispool.cli import sendmail_main; sendmail_main()",
         *at, "-odq", "bob@x.test"],
        input=b"Subject: from cron\n\nhi\n", capture_output=True, env=caller, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert serving.handled() == 4
    conn = sqlite3.connect(tmp_path / "store.db")
    try:
        (data,) = conn.execute("SELECT data FROM contents").fetchone()
    finally:
        conn.close()
    assert b"From: handoff-caller@" in data


def test_the_client_imports_almost_nothing(daemon: tuple[Path, Daemon], tmp_path: Path) -> None:
    """With a daemon running, the process imports no dataclasses, typing, enum, pathlib,
    email, json, re, socket.py or sqlite3: only the modules of ``CLIENT_MODULES``."""
    profile, serving = daemon
    done = subprocess.run(
        [sys.executable, "-c", _WATCHED, "--profile", str(profile), "-odq", "-oi",
         "-f", "me@x.test", "bob@x.test"],
        input=b"Subject: cheap\n\nhello\n", capture_output=True, env=env(), timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    before, after = (set(line.split()) for line in done.stdout.decode().splitlines()[-2:])
    assert after - before <= CLIENT_MODULES, sorted(after - before - CLIENT_MODULES)
    assert serving.handled() == 1
    assert _queued(tmp_path / "store.db") == [("queued", "cheap")]


def test_a_daemon_killed_mid_request_leaves_the_message_queued_once(tmp_path: Path) -> None:
    """The daemon is stopped (SIGSTOP), the client sends its request, the daemon is
    killed (SIGKILL): the client warns, queues the message itself and exits 0; once."""
    profile = smtp_profile(tmp_path, 9)
    serving = Daemon(profile).wait_handoff()
    serving.process.send_signal(signal.SIGSTOP)
    try:
        client = subprocess.Popen(
            [sys.executable, "-c", "from mapispool.cli import sendmail_main; sendmail_main()",
             "--profile", str(profile), "-odq", "-oi", "-f", "me@x.test", "bob@x.test"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(),
        )  # fmt: skip
        assert client.stdin is not None
        client.stdin.write(b"Subject: killed\n\nhello\n")
        client.stdin.close()
        wait_until(lambda: _waits_for_an_answer(client.pid), timeout=60)
    finally:
        serving.process.send_signal(signal.SIGKILL)
        serving.wait_exit()
    assert client.stderr is not None
    with client.stderr:
        stderr = client.stderr.read()
    client.wait(timeout=60)
    assert client.returncode == 0, stderr
    assert b"the daemon did not answer" in stderr
    assert _queued(tmp_path / "store.db") == [("queued", "killed")]
    assert len(_keys(tmp_path / "store.db")) == 1


def _waits_for_an_answer(pid: int) -> bool:
    """The client has a connected socket and sleeps (in its wait for the answer)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return any(link.startswith("socket:") for link in links) and state == "S"


class ClosingServer:
    """A hand-off socket that reads one request and closes without answering; with
    ``commit``, it first stores the message as the daemon would (then dies)."""

    def __init__(self, profile: Path, commit: bool) -> None:
        self.profile, self.commit = profile, commit
        self.path = handoff_socket(os.path.realpath(profile), env())
        self.requests = 0
        self.store = DaemonStore(profile.parent / "store.db")
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        self.requests += 1
        if self.commit:
            code = run(
                request.args, io.BytesIO(request.content), Path(request.profile),
                env=request.env, cwd=request.cwd, submission_key=request.key,
                daemon_store=self.store,
            )  # fmt: skip
            assert code == 0
        writer.close()
        await writer.wait_closed()

    def __enter__(self) -> ClosingServer:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        if os.path.lexists(self.path):
            os.unlink(self.path)
        self.thread.start()
        start = asyncio.start_unix_server(self._answer, path=self.path)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(30)
        return self

    async def _close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
        self.store.close()
        if os.path.lexists(self.path):
            os.unlink(self.path)


@pytest.mark.parametrize("commit", [False, True], ids=["before-commit", "after-commit"])
def test_a_server_that_closes_without_answering_never_duplicates(
    tmp_path: Path, commit: bool
) -> None:
    """The connection breaks before the answer, whether or not the other end committed:
    the client queues the message itself with the same submission id: exit 0, once."""
    profile = smtp_profile(tmp_path, 9)
    with ClosingServer(profile, commit) as server:
        args = ["--profile", str(profile), "-odq", "-f", "me@x.test", "bob@x.test"]
        done = sendmail(args, b"Subject: closed\n\nhello\n.\nnot read\n", timeout=60)
    assert server.requests == 1
    assert done.returncode == 0, done.stderr
    assert b"the daemon did not answer" in done.stderr
    assert _queued(tmp_path / "store.db") == [("queued", "closed")]
    assert len(_keys(tmp_path / "store.db")) == 1
    conn = sqlite3.connect(tmp_path / "store.db")
    try:
        (data,) = conn.execute("SELECT data FROM contents").fetchone()
    finally:
        conn.close()
    assert b"not read" not in data


ARGV = [
    ["-oi", "bob@x"], ["-i", "bob@x"], ["-f", "-i", "bob@x"], ["-f-i", "bob@x"],
    ["-bp"], ["-bm", "bob@x"], ["-bx"], ["-q"], ["-q15m"], ["-odi", "bob@x"],
    ["-odq", "-oi", "bob@x"], ["-oem", "bob@x"], ["--profile", "p.toml", "-t"],
    ["--profile=p.toml", "bob@x"], ["--", "-oi", "-bp"], ["-F", "-q", "bob@x"],
    ["-O", "x", "-i"], ["-", "-i"], ["-t", "-oitrue"],
]  # fmt: skip


@pytest.mark.parametrize("argv", ARGV, ids=[" ".join(a) for a in ARGV])
def test_the_clients_scan_reads_the_arguments_as_the_parser(argv: list[str]) -> None:
    """The client decides from the arguments alone how to read stdin and whether to hand
    off: it must read them as ``sendmail_args.parse_args`` does."""
    assert set(WITH_VALUE) == _WITH_VALUE
    scanned = scan_args(argv)
    try:
        inv = parse_args(argv)
    except Exception:
        return  # a refusal: the daemon (or this process) says so, with its exit code
    local = inv.mode in ("p", "q") or inv.delivery == "now"
    assert (scanned is None) == local
    if scanned is not None:
        assert scanned == (str(inv.profile) if inv.profile else None, inv.ignore_dots)


def test_cron_without_a_runtime_directory_finds_a_daemon_run_by_systemd() -> None:
    """A daemon listens in ``$XDG_RUNTIME_DIR`` when it has one, else in the temporary
    directory; a client looks there first, then in the other places."""
    uid = os.geteuid()
    systemd = {"XDG_RUNTIME_DIR": f"/run/user/{uid}", "TMPDIR": "/var/tmp"}
    cron = {"TMPDIR": "/var/tmp"}
    daemon_there = handoff_socket("/home/u/p.toml", systemd)
    assert daemon_there.startswith(f"/run/user/{uid}/mapispool/sendmail-")
    assert daemon_there in handoff_sockets("/home/u/p.toml", cron)
    assert handoff_sockets("/home/u/p.toml", cron)[0].startswith(f"/var/tmp/mapispool-{uid}/")
    assert handoff_socket("/home/u/p.toml", cron) in handoff_sockets("/home/u/p.toml", systemd)
