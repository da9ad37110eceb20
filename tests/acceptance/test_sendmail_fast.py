"""``mapispool-sendmail``'s fast path (issue #13): the plain ``sendmail [-f] [-F] [-t]
[-oi] rcpt...`` queues with the profile and the SQLite store alone. It must import none of
asyncio, click, rich, the session, the spooler or the transports, and it must store the
very rows the full path (the application layer's ``submit``) stores for the same input,
hostile input included. The entry point runs in a subprocess, as mutt and cron run it."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapispool.cli.sendmail_args import parse_args
from mapispool.cli.sendmail_deliver import queue_and_deliver as full_path
from mapispool.cli.sendmail_run import prepare_message, read_message, submit_params
from mapispool.mapi import PR_CLIENT_SUBMIT_TIME, PR_INTERNET_MESSAGE_ID, PR_MESSAGE_SIZE
from mapispool.store.codec import load_props
from tests.acceptance.test_cli_support import env, sendmail, smtp_profile
from tests.acceptance.test_daemon_support import Serve, wait_until
from tests.servers.smtp import SmtpServer

#: What the submit path must not import (package prefixes).
HEAVY = ("asyncio", "click", "rich", "mapispool.session", "mapispool.spooler",
         "mapispool.transports", "mapispool.app")  # fmt: skip

#: Runs the ``mapispool-sendmail`` entry point, then prints the modules it imported.
_WATCHED = """
import json, sys
from mapispool.cli import sendmail_main
try:
    sendmail_main()
finally:
    print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _watched(args: list[str], stdin: bytes) -> tuple[int, list[str], bytes]:
    done = subprocess.run(
        [sys.executable, "-c", _WATCHED, *args], input=stdin, capture_output=True,
        timeout=60, env=env(), check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout.decode().splitlines()[-1]), done.stderr


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_the_fast_path_imports_nothing_heavy(tmp_path: Path, smtp: SmtpServer) -> None:
    """Queue only (-odq), and the default with no daemon (background: it starts the
    detached Send/Receive, which may import what it likes): neither sendmail process
    imports asyncio, click, rich, the session, the spooler or the transports."""
    profile = smtp_profile(tmp_path, smtp.port, send_immediately=True)
    for mode in ("-odq", "-odb"):
        code, modules, stderr = _watched(
            ["--profile", str(profile), mode, "-f", "me@example.test", "bob@example.test"],
            b"Subject: cheap\n\nhello\n",
        )
        assert code == 0, stderr
        assert "mapispool.cli.sendmail_fast" in modules
        assert _heavy(modules) == [], mode
    smtp.wait_for(1, timeout=60)  # the background Send/Receive sent the -odb one


def test_with_a_daemon_the_fast_path_tells_it_and_stays_cheap(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """A running daemon holds the store, and the sendmail process names the store through
    another profile (so it cannot hand the message off: ``test_sendmail_handoff``): it
    writes the message and tells the daemon over the control socket (which sends it at
    once), still without importing the heavy modules."""
    profile = smtp_profile(tmp_path, smtp.port, send_immediately=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "profile.toml").write_text(
        profile.read_text().replace('store = "store.db"', 'store = "../store.db"')
    )
    daemon = Serve(profile).wait_started()
    try:
        wait_until(lambda: "event=sendmail-handoff" in daemon.text(), timeout=30)
        code, modules, stderr = _watched(
            ["--profile", str(other / "profile.toml"), "-f", "me@example.test",
             "bob@example.test"],
            b"Subject: to the daemon\n\nhello\n",
        )  # fmt: skip
        assert code == 0, stderr
        assert b"warning" not in stderr
        assert _heavy(modules) == []
        assert "mapispool.daemon.notify" in modules
        (received,) = smtp.wait_for(1, timeout=60)
        assert b"Subject: to the daemon" in received.data
        assert "handled=" not in daemon.text()
    finally:
        assert daemon.stop() == 0


# -- the same rows as the full path ----------------------------------------------------------

#: Hostile and ordinary input, as sendmail's callers give it: (name, arguments, message).
CASES = [
    ("plain", ["-oi", "-f", "me@example.test", "bob@example.test"],
     b"From: Me <me@example.test>\nTo: bob@example.test\nSubject: hi\n"
     b"Date: Sun, 29 Nov 2026 20:00:00 +0000\nMessage-ID: <a1@example.test>\n\nhello\n"),
    ("8-bit, bare LF, bare CR", ["-oi", "-f", "me@example.test", "bob@example.test"],
     "From: Zoë <me@example.test>\nSubject: Grüße\nDate: Sun, 29 Nov 2026 20:00:00 +0000\n"
     "Message-ID: <a2@example.test>\n\nK\u00e4se\rund\nmehr\r\n".encode()),
    ("Bcc removed (-t)", ["-t", "-oi", "-f", "me@example.test"],
     b"From: me@example.test\nTo: bob@example.test\nCc: carol@example.test\n"
     b"Bcc: secret@example.test\nBCC : other@example.test\nSubject: bcc\n"
     b"Date: Sun, 29 Nov 2026 20:00:00 +0000\nMessage-ID: <a3@example.test>\n\nbody\n"),
    ("long lines", ["-oi", "-f", "me@example.test", "bob@example.test"],
     b"From: me@example.test\nSubject: long\nDate: Sun, 29 Nov 2026 20:00:00 +0000\n"
     b"Message-ID: <a4@example.test>\n\n" + b"x" * 5000 + b"\n" + b"y" * 1200 + b"\n"),
    ("no From: -F and -f make it", ["-F", "Eve\nReply-To: evil@example.test",
                                    "-f", "eve@example.test", "bob@example.test"],
     b"Subject: cron\nDate: Sun, 29 Nov 2026 20:00:00 +0000\n"
     b"Message-ID: <a5@example.test>\n\ndone\n.\nnot read\n"),
    ("no From, Date or Message-ID", ["-oi", "-f", "cron@example.test", "bob@example.test"],
     b"Subject: bare\n\nnothing else\n"),
]  # fmt: skip

#: Columns that differ from one run to the next (row ids, entry ids, times).
_VOLATILE = {"id", "entry_id", "message_id", "created_at", "submit_time", "not_before",
             "expires_at", "updated_at", "due_at", "at"}  # fmt: skip
_TABLES = ("messages", "contents", "recipients", "queue", "events", "store_meta", "dedupe")
_GENERATED = re.compile(rb"(?m)^(Date|Message-ID): [^\r\n]*")


def _rows(store: Path, generated: bool) -> dict[str, list[dict[str, Any]]]:
    """Every row of the store's message tables, without what differs between runs; with
    ``generated``, the Date and Message-ID values the store added are blanked too."""
    conn = sqlite3.connect(store)
    try:
        dump: dict[str, list[dict[str, Any]]] = {}
        for table in _TABLES:
            cursor = conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
            names = [d[0] for d in cursor.description]
            rows = []
            for values in cursor.fetchall():
                row = {n: v for n, v in zip(names, values, strict=True) if n not in _VOLATILE}
                if table == "messages":
                    props = load_props(row.pop("props"))
                    props.pop(PR_CLIENT_SUBMIT_TIME)
                    if generated:  # the added Message-ID's length varies
                        props.pop(PR_INTERNET_MESSAGE_ID)
                        props.pop(PR_MESSAGE_SIZE)
                        row.pop("size")
                    row["props"] = props
                if table == "contents" and generated:
                    row["data"] = _GENERATED.sub(rb"\1: -", row["data"])
                    row.pop("sha256")
                rows.append(row)
            dump[table] = rows
        (lifetime,) = conn.execute("SELECT expires_at - submit_time FROM queue").fetchone()
        dump["lifetime"] = [{"seconds": round(lifetime)}]
        return dump
    finally:
        conn.close()


def _through_the_full_path(profile: Path, args: list[str], stdin: bytes) -> int:
    """What ``sendmail_run.run`` does, with the application layer's submit in the place
    of the fast path (``sendmail_deliver.queue_and_deliver``)."""
    inv = parse_args(args)
    content = read_message(io.BytesIO(stdin), inv.ignore_dots)
    return full_path(profile, submit_params(prepare_message(content, inv), inv), "queue")


@pytest.mark.parametrize(("name", "args", "message"), CASES, ids=[c[0] for c in CASES])
def test_the_fast_path_stores_the_rows_of_the_full_path(
    tmp_path: Path, name: str, args: list[str], message: bytes
) -> None:
    fast_dir, full_dir = tmp_path / "fast", tmp_path / "full"
    fast_dir.mkdir()
    full_dir.mkdir()
    fast_profile = smtp_profile(fast_dir, 9)
    full_profile = smtp_profile(full_dir, 9)
    done = sendmail(["--profile", str(fast_profile), "-odq", *args], message)
    assert done.returncode == 0, done.stderr
    assert _through_the_full_path(full_profile, args, message) == 0
    generated = b"Message-ID:" not in message
    fast, full = _rows(fast_dir / "store.db", generated), _rows(full_dir / "store.db", generated)
    assert fast == full
    assert len(fast["messages"]) == 1
    assert fast["queue"][0]["state"] == "queued"
    if "Bcc" in name:
        content = fast["contents"][0]["data"]
        assert b"secret@" not in content
        assert b"other@" not in content
        assert len(fast["recipients"]) == 4
    assert (fast_dir / "store.db.seq").exists() == (full_dir / "store.db.seq").exists()


def test_fast_path_refusals_keep_their_exit_codes(tmp_path: Path) -> None:
    """The #13 refusals hold on the fast path: CR/LF in -f is exit 64 naming -f; a
    message with no recipients is 64; a broken profile is 78 and nothing is stored."""
    profile = smtp_profile(tmp_path, 9)
    done = sendmail(["--profile", str(profile), "-f", "a@x\r\nBcc: v@x", "bob@x.test"], b"S: x\n")
    assert done.returncode == 64
    assert b"-f" in done.stderr
    done = sendmail(["--profile", str(profile), "-t", "-oi"], b"Subject: nobody\n\nhi\n")
    assert done.returncode == 64, done.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text('store = "other.db"\nsend_immediately = "yes"\n')
    done = sendmail(["--profile", str(broken), "-odq", "bob@x.test"], b"Subject: x\n\nhi\n")
    assert done.returncode == 78
    assert b"send_immediately" in done.stderr
    assert not (tmp_path / "other.db").exists()


def test_a_daemon_that_does_not_answer_is_only_a_warning(tmp_path: Path) -> None:
    """A control socket that accepts but never answers (a wedged daemon): the message
    is stored before the socket is used, so sendmail warns and exits 0; a retry by the
    caller would only happen after a failure, when nothing was stored."""
    import socket

    profile = smtp_profile(tmp_path, 9)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "store.db.sock"))
    listener.listen(1)
    try:
        args = ["--profile", str(profile), "-odq", "-f", "me@x.test", "bob@x.test"]
        done = sendmail(args, b"Subject: wedged\n\nhi\n", timeout=60)
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert b"did not take the news" in done.stderr
    wait_until(lambda: (tmp_path / "store.db").exists())
    conn = sqlite3.connect(tmp_path / "store.db")
    try:
        assert conn.execute("SELECT state FROM queue").fetchall() == [("queued",)]
    finally:
        conn.close()
