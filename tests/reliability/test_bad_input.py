"""Bad input (DESIGN §8): each mistake is refused with a message naming what is wrong and
what to do, and nothing already accepted is lost."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapispool.mapi import (
    FLUSH_FORCE,
    FLUSH_UPLOAD,
    MAPI_E_CORRUPT_STORE,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_RECIPIENTS,
    MAPI_E_VERSION,
    MapiError,
)
from mapispool.profile import Profile, ProfileError
from mapispool.session import Session
from mapispool.store import SqliteStore
from mapispool.submission import parse_recipient, prepare
from tests.conftest import StoreBackend
from tests.servers.smtp import SmtpServerFactory
from tests.sync_store import SyncStore

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
GOOD = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: kept\r\n\r\nbody\r\n"


def loopback(tmp_path: Path) -> Profile:
    return Profile.from_dict(
        {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {"a": {"provider": "loopback"}},
        }
    )


@pytest.mark.parametrize(
    ("message", "recipients", "words"),
    [
        (b"this is not a header\r\n\r\nbody", ["b@x.test"], ["line 1", "not a header field"]),
        (b"To: b@x.test\r\nbroken\r\n\r\nbody", None, ["line 2", "Name: value"]),
        (b"To: b@x.test\r\nSubject: caf\xe9\r\n\r\nx", None, ["Subject", "not UTF-8", "2047"]),
        (b"", ["b@x.test"], ["empty"]),
        (GOOD, [""], ["empty recipient"]),
        (GOOD, ["   "], ["empty recipient"]),
        (GOOD, ["not an address"], ["not an email address"]),
        (GOOD, ["SMTP:"], ["empty recipient"]),
        (GOOD, ["b@x.test\r\nRCPT TO:<evil@x.test>"], ["line break"]),
        (GOOD, ["SMTP:b@x.test\nevil"], ["line break"]),
        (GOOD, "b@x.test", ["list of strings"]),
        (b"From: a@x.test\r\nSubject: none\r\n\r\nx", None, ["no recipients"]),
    ],
)
def test_bad_submissions_are_refused_and_nothing_is_lost(
    tmp_path: Path, message: bytes, recipients: Any, words: list[str]
) -> None:
    """Malformed header blocks, undeclared 8-bit headers, empty/invalid/injected addresses:
    MAPI_E_INVALID_PARAMETER (or NO_RECIPIENTS) naming the fault; the queue keeps what it had."""
    with Session.logon(loopback(tmp_path)) as session:
        kept = session.submit(GOOD)
        with pytest.raises(MapiError) as caught:
            session.submit(message, recipients=recipients)
        assert caught.value.hresult in (MAPI_E_INVALID_PARAMETER, MAPI_E_NO_RECIPIENTS)
        for word in words:
            assert word in str(caught.value)
        assert [e.entry_id for e in session.outgoing_queue()] == [kept]


def test_header_injection_through_the_api_is_refused(tmp_path: Path) -> None:
    """A CR/LF inside a header value (a compat32 Message allows it) or in the sender would
    add a header or a hidden recipient: refused, naming the header."""
    injected = Message()
    injected["To"] = "b@x.test"
    injected["Subject"] = "hello\r\nBcc: evil@x.test"
    with Session.logon(loopback(tmp_path)) as session:
        with pytest.raises(MapiError, match="'Subject' header contains a line break"):
            session.submit(injected)
        with pytest.raises(MapiError, match="line break"):
            session.submit(GOOD, sender="a@x.test\r\nRCPT TO:<evil@x.test>")
        assert session.outgoing_queue() == []


def test_utf8_headers_and_folded_lines_are_accepted() -> None:
    """Raw UTF-8 headers (RFC 6532) and folded header lines are legitimate."""
    raw = b"To: b@x.test\r\nSubject: caf\xc3\xa9\r\n and more\r\n\r\nbody\r\n"
    prepared = prepare(raw, recipients=None, now=NOW)
    assert prepared.content.endswith(raw)


def test_missing_date_and_message_id_are_added_once_and_kept_across_retries(
    store_backend: StoreBackend, smtp_server_factory: SmtpServerFactory
) -> None:
    """No Date or Message-ID: both are added at submit; a retried message goes out with the
    very same bytes the second time."""
    server = smtp_server_factory(data_answers=["451 4.3.0 try again"])
    data = {
        **store_backend.options(),
        "send_immediately": False,
        "transports": {
            "out": {"provider": "smtp", "host": server.host, "port": server.port, "tls": "none"}
        },
    }
    with Session.logon(Profile.from_dict(data)) as session:
        session.submit(b"From: a@x.test\r\nTo: b@x.test\r\nSubject: bare\r\n\r\nhi\r\n")
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
    first, second = server.transactions
    assert first.reply.startswith("451")
    assert first.data == second.data
    assert b"\r\nDate: " in b"\r\n" + second.data
    assert b"\r\nMessage-ID: <" in b"\r\n" + second.data


_BIG = """
import resource, sys
from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import Session

size = 50 * 1024 * 1024
profile = Profile.from_dict({"store": sys.argv[1], "send_immediately": False,
                             "transports": {"a": {"provider": "loopback"}}})
with Session.logon(profile) as session:
    body = (b"x" * 76 + b"\\r\\n") * (size // 78)
    message = b"From: a@x.test\\r\\nTo: b@x.test\\r\\nSubject: big\\r\\n\\r\\n" + body
    del body
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    entry_id = session.submit(message)
    submitted = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del message
    with session.store.open_content(entry_id) as stream:
        total = 0
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    print(base, submitted, total)
"""


@pytest.mark.sqlite_only("SQLite's streamed blob writes")
def test_a_50_mb_message_is_stored_with_bounded_memory(tmp_path: Path) -> None:
    """Submitting a 50 MB message grows the process by well under three copies of it (the
    header is parsed alone, the body is not decoded or re-joined), and it reads back in
    pieces with open_content()."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", _BIG, str(tmp_path / "store.db")],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout.split()
    base_kb, submitted_kb, total = (int(x) for x in out)
    size = 50 * 1024 * 1024
    assert total > size * 0.99
    assert (submitted_kb - base_kb) * 1024 < 2.2 * size, (base_kb, submitted_kb)


@pytest.mark.parametrize(
    ("profile", "words"),
    [
        ({"transports": {"a": {"provider": "loopback"}}, "stroe": "x"}, ["stroe", "unknown"]),
        ({"transports": {"a": {}}}, ["transports.a.provider", "missing"]),
        ({"transports": {"a": {"provider": "nosuch"}}}, ["transports.a.provider", "nosuch"]),
        ({"transports": {"a": {"provider": "loopback"}}, "send_immediately": "yes"}, ["true"]),
        ({"transports": {"a": {"provider": "loopback"}}, "retry": {"floor": "5m"}}, ["seconds"]),
        ({"transports": {"a": {"provider": "loopback"}}, "retry": {"flor": 5}}, ["retry.flor"]),
        (
            {"transports": {"o": {"provider": "smtp", "host": "h", "hots": 1}}},
            ["transports.o", "hots"],
        ),
        (
            {"transports": {"o": {"provider": "smtp", "host": "h", "port": "25"}}},
            ["transports.o", "port"],
        ),
    ],
)
def test_bad_profiles_name_the_key(profile: dict[str, Any], words: list[str]) -> None:
    """Unknown keys, wrong types and a missing or unknown provider fail at load, naming
    the key."""
    with pytest.raises(ProfileError) as caught:
        Profile.from_dict(profile, source="p.toml")
    for word in words:
        assert word in str(caught.value)


@pytest.mark.sqlite_only("a damaged SQLite file")
def test_corrupt_store_is_refused_with_an_explanation(tmp_path: Path) -> None:
    """A store file that is not a database: MAPI_E_CORRUPT_STORE saying it is damaged."""
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(MapiError) as caught:
        SqliteStore(path)
    assert caught.value.hresult == MAPI_E_CORRUPT_STORE
    assert "damaged" in str(caught.value)


@pytest.mark.sqlite_only("the SQLite file's schema version")
def test_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    """A store written by a newer mapispool: MAPI_E_VERSION, and the file is left alone."""
    path = tmp_path / "store.db"
    SqliteStore(path).close_blocking()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(MapiError) as caught:
        SqliteStore(path)
    assert caught.value.hresult == MAPI_E_VERSION
    assert "upgrade mapispool" in str(caught.value)


@pytest.mark.sqlite_only("SQLite's file lock")
def test_locked_store_waits_then_says_busy(tmp_path: Path) -> None:
    """Another process holding a write transaction: a submit waits for it; past the busy
    timeout it fails with MAPI_E_BUSY naming the lock, and the store is intact after."""
    path = tmp_path / "store.db"
    store = SyncStore(path)
    store.store._writer.conn.execute("PRAGMA busy_timeout = 200")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    prepared = prepare(GOOD, recipients=None, now=NOW)
    try:
        with pytest.raises(MapiError, match="locked by another process"):
            store.submit(prepared.content, prepared.props, prepared.recipients,
                         submit_time=1.0, not_before=None, expires_at=2.0)  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.submit(prepared.content, prepared.props, prepared.recipients,
                 submit_time=1.0, not_before=None, expires_at=2.0)  # fmt: skip
    assert len(store.outgoing_queue()) == 1
    store.close()


@pytest.mark.sqlite_only("a SQLite file on a read-only mount")
def test_read_only_store_is_refused_clearly(tmp_path: Path) -> None:
    """A store on a read-only file system opens for reading but refuses a submit with
    MAPI_E_NO_ACCESS-style text naming read-only (root ignores file modes, so the test
    uses a read-only mount)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only file system")
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        store = SyncStore(mount / "store.db")
        prepared = prepare(GOOD, recipients=None, now=NOW)
        store.submit(prepared.content, prepared.props, prepared.recipients,
                     submit_time=1.0, not_before=None, expires_at=2.0)  # fmt: skip
        store.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(MapiError) as caught:
            _open_and_submit(mount / "store.db")
        assert "read-only" in str(caught.value) or "cannot open" in str(caught.value)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def assert_invalid(exc: MapiError) -> None:
    assert exc.hresult == MAPI_E_INVALID_PARAMETER


def _open_and_submit(path: Path) -> None:
    with SyncStore(path) as store:
        prepared = prepare(GOOD, recipients=None, now=NOW)
        store.submit(prepared.content, prepared.props, prepared.recipients,
                     submit_time=1.0, not_before=None, expires_at=2.0)  # fmt: skip


# -- properties --------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(_text)
def test_parse_recipient_never_lets_a_line_break_through(spec: str) -> None:
    """Any string is either refused with MAPI_E_INVALID_PARAMETER or becomes a recipient
    with a non-empty address free of CR, LF and NUL and an upper-case address type."""
    try:
        recipient = parse_recipient(spec)
    except MapiError as exc:
        refused = exc.hresult
    else:
        refused = None
    if refused is not None:
        assert refused == MAPI_E_INVALID_PARAMETER
        return
    assert recipient.address
    assert not any(ch in recipient.address for ch in "\r\n\0")
    assert recipient.addrtype == recipient.addrtype.upper()


_header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_categories=("Cc",)),
    max_size=60,
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(subject=_header_text, body=st.binary(max_size=300), bcc=st.booleans(), mid=st.booleans())
def test_prepare_keeps_the_message_and_hides_bcc(
    subject: str, body: bytes, bcc: bool, mid: bool
) -> None:
    """For any subject and body: the body is kept byte for byte but for its line ends,
    which become CRLF (the canonical form), Bcc never reaches the content, the
    Message-ID given is kept (or one is added), and Date is present."""
    message = EmailMessage()
    message["From"] = "a@x.test"
    message["To"] = "b@x.test"
    if bcc:
        message["Bcc"] = "hidden@x.test"
    if mid:
        message["Message-ID"] = "<fixed@x.test>"
    message["Subject"] = subject
    raw = message.as_bytes() + b"\n" + body.replace(b"\r", b"")
    try:
        prepared = prepare(raw, recipients=None, now=NOW)
    except MapiError as exc:
        assert_invalid(exc)
        return
    head, _, rest = prepared.content.partition(b"\r\n\r\n")
    assert rest == raw.partition(b"\n\n")[2].replace(b"\n", b"\r\n")
    assert b"hidden@x.test" not in head
    assert [r.address for r in prepared.recipients] == ["b@x.test"] + (
        ["hidden@x.test"] if bcc else []
    )
    assert b"\r\nDate: " in b"\r\n" + head
    if mid:
        assert head.count(b"Message-ID:") == 1
        assert b"<fixed@x.test>" in head


def test_cli_submit_refuses_injected_recipient(tmp_path: Path) -> None:
    """The command line goes through the same checks: a recipient with a line break is
    refused with the reason on stderr and a non-zero exit."""
    profile = tmp_path / "profile.toml"
    profile.write_text(
        json.dumps({"store": str(tmp_path / "store.db")}).replace('{"store": ', "store = ")[:-1]
        + '\nsend_immediately = false\n[transports.a]\nprovider = "loopback"\n'
    )
    profile.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mapispool.cli",
            "--profile",
            str(profile),
            "sendmail",
            "b@x.test\nRCPT TO:<evil@x.test>",
        ],
        input=GOOD,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert b"line break" in done.stderr
    with SyncStore(tmp_path / "store.db") as store:
        assert len(store.outgoing_queue()) == 0
