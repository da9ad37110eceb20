"""Two Maildir sources in one store, and stores written with the old dedupe keys
(issue #10, item 6), through the public API with a real SQLite store and real Maildirs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import FLUSH_DOWNLOAD
from mapispool.profile import Profile
from mapispool.session import Session
from mapispool.store import Delivery
from tests.sync_store import SyncStore

NAME = "1700000000.M1P1.host"


def mail(tag: str) -> bytes:
    return (
        f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@example.org>\r\n\r\n{tag}\r\n"
    ).encode()


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def profile_for(tmp_path: Path, sources: dict[str, Path], **extra: Any) -> Profile:
    return Profile.from_dict(
        {
            "store": str(tmp_path / "store.db"),
            "send_immediately": False,
            "transports": {
                name: {"provider": "maildir", "path": str(path), **extra}
                for name, path in sources.items()
            },
        }
    )


def receive(profile: Profile) -> list[bytes]:
    with Session.logon(profile) as session:
        session.spooler_status().flush_queues(FLUSH_DOWNLOAD)
        return sorted(m.content for m in session.folder("Inbox").messages())


def write_old_key(tmp_path: Path, key: str, content: bytes) -> None:
    """What an earlier version left in the store: a message under a key without source."""
    with SyncStore(tmp_path / "store.db") as store:
        store.deliver([Delivery("Inbox", content, {}, dedupe_key=key)])


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    return make_maildir(tmp_path / "a"), make_maildir(tmp_path / "b")


@pytest.mark.parametrize("action", ["move", "delete"])
def test_one_file_name_in_two_sources_is_stored_from_each(
    tmp_path: Path, two: tuple[Path, Path], action: str
) -> None:
    """Before the fix the second file was deleted (or moved) without being stored."""
    a, b = two
    (a / "new" / NAME).write_bytes(mail("from-a"))
    (b / "new" / NAME).write_bytes(mail("from-b"))
    profile = profile_for(tmp_path, {"a": a, "b": b}, action=action)
    assert receive(profile) == sorted([mail("from-a"), mail("from-b")])
    assert receive(profile) == sorted([mail("from-a"), mail("from-b")])  # once each
    assert os.listdir(a / "new") == os.listdir(b / "new") == []


def test_one_maildir_under_two_spellings_is_stored_once(tmp_path: Path) -> None:
    """The source is the Maildir's real path: a symbolic link to it shares its keys."""
    real = make_maildir(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    (real / "new" / NAME).write_bytes(mail("once"))
    assert receive(profile_for(tmp_path, {"a": real}, include_cur=True)) == [mail("once")]
    linked = profile_for(tmp_path, {"b": tmp_path / "link"}, include_cur=True)
    assert receive(linked) == [mail("once")]


def test_an_old_key_still_stops_its_source_from_downloading_again(
    tmp_path: Path, two: tuple[Path, Path]
) -> None:
    """An earlier version stored the file, then died before moving it (and stored another
    that it had moved to cur/, seen again with include_cur): neither is stored twice."""
    a, _b = two
    (a / "new" / NAME).write_bytes(mail("crash-window"))
    moved = "1700000001.M2P2.host"
    (a / "cur" / f"{moved}:2,S").write_bytes(mail("moved"))
    write_old_key(tmp_path, f"maildir:{NAME}", mail("crash-window"))
    write_old_key(tmp_path, f"maildir:{moved}", mail("moved"))
    profile = profile_for(tmp_path, {"a": a}, include_cur=True)
    assert receive(profile) == sorted([mail("crash-window"), mail("moved")])
    assert os.listdir(a / "new") == []
    assert sorted(os.listdir(a / "cur")) == sorted([f"{NAME}:2,S", f"{moved}:2,S"])


def test_an_old_key_does_not_hide_a_later_file_of_another_source(
    tmp_path: Path, two: tuple[Path, Path]
) -> None:
    """A key in the old form came from some source; a file with that name arriving in a
    Maildir after this version first ran there is new mail and is stored."""
    a, b = two
    write_old_key(tmp_path, f"maildir:{NAME}", mail("from-a-long-ago"))
    profile = profile_for(tmp_path, {"a": a, "b": b}, action="delete")
    receive(profile)  # the first run under the new keys
    later = time.time() + 3600  # after the first run, whatever the file system's clock
    path = b / "new" / NAME
    path.write_bytes(mail("from-b"))
    os.utime(path, (later, later))
    assert receive(profile) == sorted([mail("from-a-long-ago"), mail("from-b")])
    assert os.listdir(b / "new") == []


def test_account_id_keeps_the_keys_of_a_moved_maildir(tmp_path: Path) -> None:
    """With account_id, a Maildir read with include_cur can move without re-downloads."""
    old = make_maildir(tmp_path / "old")
    (old / "new" / NAME).write_bytes(mail("kept"))
    assert receive(profile_for(tmp_path, {"a": old}, include_cur=True, account_id="home")) == [
        mail("kept")
    ]
    new = tmp_path / "new-place"
    old.rename(new)
    moved = profile_for(tmp_path, {"a": new}, include_cur=True, account_id="home")
    assert receive(moved) == [mail("kept")]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"account_id": ""}, "account_id: must be a non-empty string"),
        ({"account_id": 3}, "account_id: must be a non-empty string"),
        ({"account_id": "x", "path": None}, "account_id: only used with path"),
    ],
)
def test_account_id_is_checked(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    from mapispool.transports.maildir import MaildirSettings

    section = {"path": str(make_maildir(tmp_path / "m")), **settings}
    section = {k: v for k, v in section.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        MaildirSettings.parse(section)
