"""The maildir transport end to end through the public API: Profile, Session, a real
SQLite store and real Maildirs in tmp_path, driven by Send/Receive (FlushQueues)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import (
    FLUSH_DOWNLOAD,
    FLUSH_UPLOAD,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_MESSAGE_CLASS,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
)
from mapispool.profile import Profile
from mapispool.transports.maildir import _logon as logon_module
from tests.conftest import StoreBackend

session_module = pytest.importorskip(
    "mapispool.session",
    reason="waits for mapispool.session (Session.logon, submit, flush_queues, folder)",
)
Session: Any = session_module.Session

# With its own Date and Message-ID, so that submission adds nothing and the delivered file
# must equal these bytes exactly.
RAW = (
    b"From: alice@example.org\r\n"
    b"To: bob@local.test\r\n"
    b"Subject: maildir end to end\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <e2e-1@example.org>\r\n"
    b"\r\n"
    b"Hello through a Maildir.\r\n"
)
NDR_CLASS = "Report.IPM.Note.NDR"


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def files(path: Path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.fixture
def inbox_dir(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.mkdir()
    return path


@pytest.fixture
def profile(store_backend: StoreBackend, inbox_dir: Path, root: Path) -> Profile:
    return Profile.from_dict(
        {
            **store_backend.options(),
            "send_immediately": False,
            "transports": {
                "md": {
                    "provider": "maildir",
                    "path": str(inbox_dir),
                    "domains": ["local.test"],
                    "deliver_root": str(root),
                }
            },
        }
    )


@pytest.fixture
def session(profile: Profile) -> Iterator[Any]:
    with Session.logon(profile) as opened:
        yield opened


def send_receive(session: Any) -> Any:
    return session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD)


def inbox(session: Any) -> list[Any]:
    return list(session.folder("Inbox").messages())


def message_class(message: Any) -> str:
    return str(message.props.get(PR_MESSAGE_CLASS, ""))


def test_submitted_message_lands_once_with_the_submitted_bytes(
    session: Any, tmp_path: Path, root: Path
) -> None:
    """A MAILDIR recipient and a local-domain recipient each get one exact copy."""
    target = make_maildir(tmp_path / "archive")
    session.submit(RAW, recipients=["MAILDIR:" + str(target), "bob@local.test"])
    send_receive(session)
    send_receive(session)
    [name] = files(target / "new")
    assert (target / "new" / name).read_bytes() == RAW
    assert files(target / "tmp") == []
    [bob_name] = files(root / "bob" / "new")
    assert (root / "bob" / "new" / bob_name).read_bytes() == RAW
    assert not any(message_class(m) == NDR_CLASS for m in inbox(session))


def test_files_in_new_are_received_exactly_once(session: Any, inbox_dir: Path) -> None:
    """Two files in new/ become two Inbox messages, even after a second Send/Receive."""
    (inbox_dir / "new" / "1700000000.M1P1.host").write_bytes(RAW)
    (inbox_dir / "new" / "1700000001.M1P1.host").write_bytes(RAW.replace(b"e2e-1", b"e2e-2"))
    send_receive(session)
    send_receive(session)
    received = inbox(session)
    assert sorted(m.content for m in received) == sorted([RAW, RAW.replace(b"e2e-1", b"e2e-2")])
    assert files(inbox_dir / "new") == []
    assert files(inbox_dir / "cur") == [
        "1700000000.M1P1.host:2,S",
        "1700000001.M1P1.host:2,S",
    ]


def test_sending_to_our_own_maildir_comes_back_once(session: Any, inbox_dir: Path) -> None:
    """Upload delivers into the receiving Maildir; the download of the same flush stores it."""
    session.submit(RAW, recipients=["MAILDIR:" + str(inbox_dir)])
    send_receive(session)
    send_receive(session)
    assert [m.content for m in inbox(session)] == [RAW]


def test_commit_then_crash_before_the_move_does_not_duplicate(
    profile: Profile, inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file stored but left in new/ (the process died first) is moved, not stored again."""
    (inbox_dir / "new" / "1700000000.M1P1.host").write_bytes(RAW)

    def died_before_the_move(*args: object) -> None:
        return None

    monkeypatch.setattr(logon_module, "finish", died_before_the_move)
    with Session.logon(profile) as first:
        send_receive(first)
        assert len(inbox(first)) == 1
    assert files(inbox_dir / "new") == ["1700000000.M1P1.host"]
    monkeypatch.undo()
    with Session.logon(profile) as second:
        send_receive(second)
        assert [m.content for m in inbox(second)] == [RAW]
    assert files(inbox_dir / "new") == []
    assert files(inbox_dir / "cur") == ["1700000000.M1P1.host:2,S"]


@pytest.mark.parametrize("kind", ["missing-parent", "new-is-a-file"])
def test_unwritable_target_gives_an_ndr(session: Any, tmp_path: Path, kind: str) -> None:
    """A Maildir that cannot be created or written bounces with an NDR in the Inbox."""
    if kind == "missing-parent":
        target = tmp_path / "no" / "such" / "box"
    else:
        target = tmp_path / "broken"
        for sub in ("cur", "tmp"):
            (target / sub).mkdir(parents=True)
        (target / "new").write_text("a file where new/ should be")
    session.submit(RAW, recipients=["MAILDIR:" + str(target)])
    send_receive(session)
    ndrs = [m for m in inbox(session) if message_class(m) == NDR_CLASS]
    assert len(ndrs) == 1


def test_status_row_follows_the_receiving_maildir(session: Any, inbox_dir: Path) -> None:
    """ValidateState on the transport's status object: available, then a failure naming
    the Maildir once it loses new/, then available again."""

    def row() -> Any:
        [found] = [r for r in session.status_table() if r[PR_DISPLAY_NAME] == "md"]
        return found

    status = session.open_status(row()[PR_ENTRYID])
    status.validate_state()
    assert row()[PR_STATUS_CODE] & STATUS_AVAILABLE
    (inbox_dir / "new").rmdir()
    status.validate_state()
    assert row()[PR_STATUS_CODE] & STATUS_FAILURE
    assert f"{inbox_dir} is not a Maildir: it has no new/" in row()[PR_STATUS_STRING]
    (inbox_dir / "new").mkdir()
    status.validate_state()
    assert not row()[PR_STATUS_CODE] & STATUS_FAILURE
