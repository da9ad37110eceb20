"""The fast header reader of submissions agrees with email.policy.default on plain
(ASCII, no encoded words) header blocks, and hands everything else to it."""

from __future__ import annotations

import email.policy
import email.utils
import re
from email.parser import BytesHeaderParser

from hypothesis import given
from hypothesis import strategies as st

from mapispool.submission import _Headers, crlf_line_ends

ATOM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=10)
ADDRESS = st.tuples(ATOM, ATOM).map(lambda p: f"{p[0]}@{p[1]}.test")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
NAME = st.lists(st.text(alphabet=LETTERS, min_size=1, max_size=8), max_size=3).map(" ".join)
MAILBOX = st.tuples(NAME, ADDRESS).map(lambda p: email.utils.formataddr(p))
ADDRESS_LIST = st.lists(MAILBOX, min_size=1, max_size=4).map(", ".join)
WORD = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(lambda c: c != "="),
    min_size=1,
    max_size=20,
)
TEXT = st.lists(WORD, min_size=1, max_size=5).map(" ".join)
MESSAGE_ID = st.tuples(ATOM, ATOM).map(lambda p: f"<{p[0]}@{p[1]}>")
FIELD = st.one_of(
    st.tuples(st.sampled_from(["To", "Cc", "Bcc", "From"]), ADDRESS_LIST),
    st.tuples(st.sampled_from(["Subject", "X-Other"]), TEXT),
    st.tuples(st.just("Message-ID"), MESSAGE_ID),
)
ADDRESS_FIELDS = ("To", "Cc", "Bcc", "From")
TEXT_FIELDS = ("Subject", "X-Other", "Message-ID")


def fold(name: str, value: str, folded: bool) -> str:
    words = value.split(" ")
    if folded and len(words) > 1:
        return f"{name}: {words[0]}\r\n {' '.join(words[1:])}"
    return f"{name}: {value}"


@given(st.lists(st.tuples(FIELD, st.booleans()), max_size=8))
def test_plain_blocks_read_like_policy_default(fields: list[tuple[tuple[str, str], bool]]) -> None:
    """Folded or not, text fields equal policy.default's text and address fields give the
    same addresses."""
    block = "\r\n".join(fold(name, value, folded) for (name, value), folded in fields).encode()
    fast = _Headers.parse(block)
    full = BytesHeaderParser(policy=email.policy.default).parsebytes(block + b"\r\n\r\n")
    for name in TEXT_FIELDS:
        assert fast.get_all(name) == [str(v) for v in full.get_all(name, [])], name
    for name in ADDRESS_FIELDS:
        ours = email.utils.getaddresses(fast.get_all(name))
        theirs = [
            (a.display_name, a.addr_spec) for v in full.get_all(name, []) for a in v.addresses
        ]
        assert ours == theirs, name


def test_encoded_words_and_utf8_are_decoded() -> None:
    """Encoded words and raw UTF-8 go through policy.default and come out decoded."""
    block = "Subject: =?utf-8?q?caf=C3=A9?=\r\nTo: Jürgen <j@example.test>".encode()
    headers = _Headers.parse(block)
    assert headers.get("Subject") == "café"
    assert headers.get("To") == "Jürgen <j@example.test>"


@given(st.binary().map(lambda b: bytes(b"a\r\n\xe9"[x % 4] for x in b)))
def test_crlf_line_ends_turns_every_bare_cr_and_lf_into_crlf(data: bytes) -> None:
    """Canonical line ends (issue #11): CRLF stays, a bare CR or LF becomes CRLF, and no
    other byte changes."""
    expected = re.sub(rb"\r(?!\n)|(?<!\r)\n", b"\r\n", data)
    assert crlf_line_ends(data) == expected
