"""Pure IMAP logic: settings validation, dedupe keys, fingerprints, UIDVALIDITY
re-baselining decisions and the keep-mode floor."""

from __future__ import annotations

from typing import Any

import pytest

from mapispool.transports.imap import ImapProvider, ImapSettings
from mapispool.transports.imap.sync import (
    FolderState,
    above_floor,
    advance_floor,
    byte_bounded,
    dedupe_key,
    fingerprint,
    message_id,
    reconcile,
)

BASE: dict[str, Any] = {"host": "mail.example.test", "username": "me", "password_env": "PW"}


def test_defaults_are_implicit_tls_on_993_keep_inbox() -> None:
    """A minimal section gets the documented defaults."""
    s = ImapSettings.parse(BASE)
    assert (s.common.tls, s.common.port, s.common.verify) == ("implicit", 993, True)
    assert (s.folders, s.common.action, s.common.batch_size, s.idle) == (
        ("INBOX",),
        "keep",
        200,
        True,
    )
    assert s.common.account_id == "me@mail.example.test"


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"tls": "ssl"}, "tls"),
        ({"port": 0}, "port"),
        ({"password": "x"}, "password"),
        ({"password_env": None}, "password_env"),
        ({"password_file": "/p"}, "password_env"),
        ({"tls": "none"}, "tls"),
        ({"action": "move"}, "move_to"),
        ({"move_to": "Archive"}, "move_to"),
        ({"folders": []}, "folders"),
        ({"batch_size": 0}, "batch_size"),
        ({"verify": "no"}, "verify"),
        ({"auth": "xoauth2"}, "token_command"),
        ({"auth": "xoauth2", "token_callable": "bad", "password_env": None}, "token_callable"),
        ({"fodlers": ["INBOX"]}, "fodlers"),
    ],
)
def test_bad_settings_name_the_key(over: dict[str, Any], key: str) -> None:
    """Every invalid section raises ValueError naming the offending key."""
    raw = {**BASE, **over}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ValueError, match=key):
        ImapProvider.check_settings(raw)


def test_starttls_defaults_to_143_and_oauth_needs_no_password() -> None:
    """Port follows the TLS mode; OAuth sections take a token source instead."""
    s = ImapSettings.parse(
        {"host": "h", "username": "u", "tls": "starttls", "auth": "xoauth2", "token_command": "t"}
    )
    assert s.common.port == 143
    assert s.common.uses_token


def test_dedupe_key_names_account_folder_uidvalidity_uid() -> None:
    """Keys are unique across accounts and folders (the store's keys are global)."""
    assert dedupe_key("me@h", "INBOX", 7, 42) == "imap:me@h/INBOX:7:42"


def test_fingerprint_uses_message_id_and_size_or_header_digest() -> None:
    """Message-ID (folding removed) plus size; without one, a digest of the headers."""
    raw = b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody\r\n"
    assert message_id(raw) == "<a@b>"
    assert fingerprint(raw, 40) == "id:<a@b>:40"
    assert fingerprint(raw, 41) != fingerprint(raw, 40)
    bare = b"Subject: x\r\n\r\nbody"
    assert fingerprint(bare, 10).startswith("hdr:")
    assert fingerprint(bare, 10) == fingerprint(b"Subject: x\r\n\r\nother", 10)


def test_reconcile_first_time_same_and_changed() -> None:
    """First sight adopts UIDVALIDITY; a change resets the floor and marks every existing
    UID for re-baselining while keeping the fingerprint index."""
    first = reconcile(FolderState(), 5, 10)
    assert first.state.uidvalidity == 5
    assert not first.changed
    same = reconcile(FolderState(5, floor=9, fp_batches=2), 5, 12)
    assert same.state == FolderState(5, floor=9, fp_batches=2)
    assert not same.changed
    changed = reconcile(FolderState(5, floor=9, fp_batches=2), 6, 12)
    assert changed.changed
    assert changed.previous == 5
    assert changed.state == FolderState(6, floor=0, rebaseline_until=11, fp_batches=2)
    assert reconcile(FolderState(5), 6, None).state.rebaseline_until == 2**32 - 1


def test_folder_state_json_round_trip_and_garbage() -> None:
    """State survives JSON; anything unreadable starts afresh instead of crashing."""
    state = FolderState(3, 4, 5, 6)
    assert FolderState.from_json(state.to_json()) == state
    assert FolderState.from_json("nonsense") == FolderState()
    assert FolderState.from_json({"uidvalidity": "x"}) == FolderState()


def test_floor_moves_only_below_pending_uids() -> None:
    """The floor never passes a UID that is not committed yet."""
    assert advance_floor(0, [1, 2, 3], []) == 3
    assert advance_floor(0, [1, 2, 5], [4]) == 2
    assert advance_floor(7, [3], []) == 7
    assert above_floor([9, 3, 12, 12], 9) == [12]


def test_byte_bounded_groups() -> None:
    """FETCH groups stay under the byte limit; an oversized message travels alone."""
    sizes = {1: 10, 2: 10, 3: 100, 4: 5}
    assert byte_bounded([1, 2, 3, 4], sizes, 25) == [[1, 2], [3], [4]]
