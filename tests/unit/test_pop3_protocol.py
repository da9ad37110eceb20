"""Pure POP3 logic: settings, listing parsers, the pass plan, batching, reply classes."""

from __future__ import annotations

from typing import Any

import pytest

from mapispool.transports.pop3 import Pop3Provider, Pop3Settings
from mapispool.transports.pop3.protocol import (
    dedupe_key,
    describe_headers,
    is_temporary,
    parse_listing,
    parse_sizes,
    plan_pass,
    take_batch,
)

BASE: dict[str, Any] = {"host": "pop.example.test", "username": "me", "password_file": "/pw"}


def test_defaults_and_ports() -> None:
    """Implicit TLS on 995 by default; STLS and none use 110."""
    s = Pop3Settings.parse(BASE)
    assert (s.common.tls, s.common.port, s.common.action, s.max_size) == (
        "implicit",
        995,
        "keep",
        64 * 1024 * 1024,
    )
    assert Pop3Settings.parse({**BASE, "tls": "stls"}).common.port == 110


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"action": "move"}, "action"),
        ({"max_size": -1}, "max_size"),
        ({"folders": ["x"]}, "folders"),
        ({"tls": "starttls"}, "tls"),
    ],
)
def test_bad_settings_name_the_key(over: dict[str, Any], key: str) -> None:
    """Invalid POP3 sections name the key."""
    with pytest.raises(ValueError, match=key):
        Pop3Provider.check_settings({**BASE, **over})


def test_listing_parsers_ignore_junk() -> None:
    """UIDL/LIST lines parse to maps; malformed lines are skipped."""
    assert parse_listing([b"1 abc", b"2 def ", b"junk", b"3"]) == {1: "abc", 2: "def"}
    assert parse_sizes([b"1 120", b"2 x"]) == {1: 120}


def test_plan_sorts_known_oversize_and_new() -> None:
    """Known UIDLs are never downloaded; over max_size stays; order is maildrop order."""
    uidls = {1: "a", 2: "b", 3: "c", 4: "gone"}
    sizes = {1: 10, 2: 5000, 3: 20}
    known = {dedupe_key("acct", "a")}
    plan = plan_pass(uidls, sizes, "acct", known.__contains__, 1000)
    assert [e.uidl for e in plan.known] == ["a"]
    assert [e.uidl for e in plan.oversize] == ["b"]
    assert [e.uidl for e in plan.download] == ["c"]
    assert plan.download[0].key == "pop3:acct:c"


def test_take_batch_bounds_count_and_bytes() -> None:
    """Batches stop at the count or the byte limit, but always take one."""
    plan = plan_pass(
        {i: str(i) for i in range(1, 6)}, {i: 100 for i in range(1, 6)}, "a", lambda k: False, None
    )
    entries = plan.download
    assert [e.number for e in take_batch(entries, 2, 10_000)] == [1, 2]
    assert [e.number for e in take_batch(entries, 10, 150)] == [3]
    assert [e.number for e in take_batch(entries, 10, 1)] == [4]


def test_reply_classes_and_header_summary() -> None:
    """[SYS/TEMP], [IN-USE] and EOF mean retry later; TOP headers summarise a message."""
    assert is_temporary("-ERR [SYS/TEMP] Server shutting down.")
    assert is_temporary("b'-ERR EOF'")
    assert not is_temporary("-ERR [AUTH] Authentication failed.")
    summary = describe_headers([b"From: a@b", b"Subject: hello", b""])
    assert summary == "'hello' from a@b"
