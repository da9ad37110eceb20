"""Profiles: loading, transport order, providers by name or "module:Class", and errors
that name the file, the key and the fix."""

from __future__ import annotations

import pytest

from mapispool.profile import Profile, ProfileError
from mapispool.transports.loopback import LoopbackProvider


def test_order_defaults_to_section_order_and_can_be_set():
    """transport_order wins; without it the order of the sections is used."""
    sections = {"b": {"provider": "loopback"}, "a": {"provider": "loopback"}}
    assert [t.name for t in Profile.from_dict({"transports": sections}).transports] == ["b", "a"]
    ordered = Profile.from_dict({"transports": sections, "transport_order": ["a", "b"]})
    assert [t.name for t in ordered.transports] == ["a", "b"]


def test_provider_by_module_and_class_name():
    """'package.module:ClassName' loads that class."""
    profile = Profile.from_toml(
        '[transports.x]\nprovider = "mapispool.transports.loopback:LoopbackProvider"\n'
    )
    assert profile.transports[0].provider_class is LoopbackProvider


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1", "colour: unknown setting"),
        ("[transports.x]\nhost = 'h'", "transports.x.provider: missing"),
        ("[transports.x]\nprovider = 'nosuch'", "unknown provider 'nosuch'"),
        ("[transports.x]\nprovider = 'no.such.module:C'", "cannot import module"),
        ("send_immediately = 'yes'", "send_immediately: must be true or false"),
        ("transport_order = ['y']\n[transports.x]\nprovider='loopback'", "no [transports.y]"),
        ("[transports.x]\nprovider = 'loopback'\ncolour = 1", "unknown loopback setting"),
        ("[retry]\nfloor = 10\ncap = 5", "retry.floor: must not be larger"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_errors_name_the_file_the_key_and_the_fix(tmp_path, text, expected):
    """Every mistake is a ProfileError whose text names the file and the key."""
    path = tmp_path / "profile.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as error:
        Profile.load(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_missing_file_says_how_to_create_one(tmp_path):
    """A profile that does not exist points at `mapispool init`."""
    with pytest.raises(ProfileError, match="mapispool init"):
        Profile.load(tmp_path / "none.toml")


def test_store_path_is_relative_to_the_profile(tmp_path):
    """A relative store path is resolved next to the profile file."""
    path = tmp_path / "p.toml"
    path.write_text('store = "sqlite://data/s.db"\n')
    assert Profile.load(path).store_path() == tmp_path / "data" / "s.db"
