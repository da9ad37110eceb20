"""The maildir transport's pure parts: unique names, keys, flags and settings checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mapispool.profile import Profile, ProfileError
from mapispool.transports.maildir import (
    MaildirProvider,
    MaildirSettings,
    dedupe_key,
    legacy_dedupe_key,
    seen_name,
    unique_name,
    unique_part,
)


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


# -- unique names ---------------------------------------------------------------------


def test_unique_name_has_time_pid_random_counter_and_host() -> None:
    """A delivery name carries seconds, microseconds, pid, random bits, a counter, host."""
    name = unique_name(now=1700000000.25, pid=4242, hostname="mx.example")
    assert re.fullmatch(r"1700000000\.M250000P4242R[0-9a-f]{16}Q\d+\.mx\.example", name)


def test_unique_name_escapes_slash_and_colon_in_the_host() -> None:
    """A host name with '/' or ':' cannot break the path or the info separator."""
    name = unique_name(hostname="odd/host:name")
    assert "/" not in name
    assert ":" not in name
    assert name.endswith(r".odd\057host\072name")


def test_unique_names_differ_within_one_process_and_instant() -> None:
    """Names made at the same instant by the same process never repeat."""
    names = {unique_name(now=1.0, pid=1, hostname="h") for _ in range(1000)}
    assert len(names) == 1000


# -- info suffix and keys -------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "unique"),
    [
        ("1.M2P3.host", "1.M2P3.host"),
        ("1.M2P3.host:2,S", "1.M2P3.host"),
        ("1.M2P3.host:2,", "1.M2P3.host"),
        ("1.M2P3.host:2,FRS", "1.M2P3.host"),
        ("1.M2P3.host:1,legacy", "1.M2P3.host"),
        ("odd:name:2,S", "odd:name"),
        ("odd:name", "odd:name"),
    ],
)
def test_unique_part_drops_only_a_trailing_info_suffix(filename: str, unique: str) -> None:
    """The unique part is the name before ':2,' (or ':1,'), whatever precedes it."""
    assert unique_part(filename) == unique


def test_dedupe_key_is_the_same_in_new_and_cur() -> None:
    """A file seen in new/ and again, renamed, in cur/ has one dedupe key."""
    assert dedupe_key("/m", "123.abc.host") == "maildir:/m/123.abc.host"
    assert dedupe_key("/m", "123.abc.host:2,S") == dedupe_key("/m", "123.abc.host")


def test_dedupe_key_names_the_source() -> None:
    """One file name in two Maildirs gives two keys, neither equal to the legacy key."""
    keys = {
        dedupe_key("/a", "1.M1P1.h"),
        dedupe_key("/b", "1.M1P1.h"),
        legacy_dedupe_key("1.M1P1.h"),
    }
    assert len(keys) == 3
    assert legacy_dedupe_key("1.M1P1.h:2,S") == "maildir:1.M1P1.h"


@pytest.mark.parametrize(
    ("filename", "seen"),
    [
        ("u", "u:2,S"),
        ("u:2,", "u:2,S"),
        ("u:2,S", "u:2,S"),
        ("u:2,FR", "u:2,FRS"),
        ("u:2,T", "u:2,ST"),
        ("u:1,whatever", "u:2,S"),
    ],
)
def test_seen_name_adds_s_in_ascii_order(filename: str, seen: str) -> None:
    """Marking a file seen adds S to its flags and keeps them sorted."""
    assert seen_name(filename) == seen


# -- settings -------------------------------------------------------------------------


def test_defaults_are_move_without_cur_and_without_create(tmp_path: Path) -> None:
    """A section with only path receives from new/, moves to cur/ and creates nothing."""
    settings = MaildirSettings.parse({"path": str(tmp_path)})
    assert settings == MaildirSettings(path=tmp_path)
    assert settings.action == "move"
    assert not settings.include_cur
    assert not settings.create
    assert not settings.domains


def test_path_expands_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'~' in path means the user's home directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert MaildirSettings.parse({"path": "~/Mail"}).path == tmp_path / "Mail"


@pytest.mark.parametrize(
    ("settings", "key", "fix"),
    [
        ({"include-cur": True}, "include-cur:", "include_cur"),
        ({"action": "archive"}, "action:", '"delete"'),
        ({"include_cur": "yes"}, "include_cur:", "true or false"),
        ({"create": 1}, "create:", "true or false"),
        ({"domains": "local.test"}, "domains:", 'domains = ["local.test"]'),
        ({"domains": ["bob@local.test"]}, "domains:", "bare domains"),
        ({"domains": ["local.test"]}, "deliver_root:", "deliver_root ="),
        ({"deliver_root": "mail"}, "deliver_root:", "domains ="),
        ({"path": ""}, "path:", 'path = "~/Maildir"'),
        ({"path": 5}, "path:", 'path = "~/Maildir"'),
    ],
)
def test_bad_values_name_the_key_and_the_fix(
    settings: dict[str, object], key: str, fix: str
) -> None:
    """Every invalid value is a ValueError starting with the key and showing the fix."""
    with pytest.raises(ValueError, match=re.escape(fix)) as caught:
        MaildirProvider.check_settings(settings)
    assert str(caught.value).startswith(key)


def test_missing_path_is_refused_at_load_unless_create(tmp_path: Path) -> None:
    """A path that does not exist fails the profile, and the message offers create = true."""
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="create = true") as caught:
        MaildirProvider.check_settings({"path": str(missing)})
    assert str(caught.value).startswith("path:")
    assert str(missing) in str(caught.value)
    MaildirProvider.check_settings({"path": str(missing), "create": True})
    assert not missing.exists()  # checking never creates anything


def test_directory_that_is_not_a_maildir_is_refused(tmp_path: Path) -> None:
    """A directory without cur/, new/, tmp/ is named with what it lacks."""
    (tmp_path / "new").mkdir()
    with pytest.raises(ValueError, match=r"has no cur/, tmp/"):
        MaildirProvider.check_settings({"path": str(tmp_path)})


def test_a_file_is_refused_even_with_create(tmp_path: Path) -> None:
    """create = true cannot turn a regular file into a Maildir."""
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        MaildirProvider.check_settings({"path": str(target), "create": True})


def test_deliver_root_must_exist(tmp_path: Path) -> None:
    """deliver_root is checked at load: a typo fails early, not at the first delivery."""
    with pytest.raises(ValueError, match=r"deliver_root: .* is not an existing directory"):
        MaildirProvider.check_settings(
            {"domains": ["local.test"], "deliver_root": str(tmp_path / "missing")}
        )


def test_domains_are_case_folded(tmp_path: Path) -> None:
    """Domains compare without regard to case or a trailing dot."""
    settings = MaildirSettings.parse({"domains": ["Local.Test."], "deliver_root": str(tmp_path)})
    assert settings.domains == frozenset({"local.test"})


def test_path_is_optional_for_a_send_only_transport(tmp_path: Path) -> None:
    """Without path the transport only delivers."""
    MaildirProvider.check_settings({"domains": ["local.test"], "deliver_root": str(tmp_path)})
    MaildirProvider.check_settings({})


def test_profile_load_reports_the_section_and_key(tmp_path: Path) -> None:
    """Through the profile loader the error names the section, the key and the fix."""
    data = {"transports": {"md": {"provider": "maildir", "path": str(tmp_path / "gone")}}}
    with pytest.raises(ProfileError, match=r"transports\.md: path: .*gone does not exist"):
        Profile.from_dict(data)


def test_profile_with_a_valid_maildir_loads(tmp_path: Path) -> None:
    """A correct section loads, with the provider resolved through the registry."""
    inbox = make_maildir(tmp_path / "Maildir")
    profile = Profile.from_dict({"transports": {"md": {"provider": "maildir", "path": str(inbox)}}})
    assert profile.transport("md").provider_class is MaildirProvider
