"""The smtp transport's pure protocol parts: reply classes, SASL strings, DATA payloads,
envelope paths and the per-recipient decision table."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapispool.transports.smtp.auth import (
    ERROR_CHALLENGE_ANSWER,
    Mechanism,
    NoMechanism,
    choose_mechanism,
    login_responses,
    oauthbearer_response,
    parse_offered,
    plain_response,
    xoauth2_response,
)
from mapispool.transports.smtp.content import (
    dot_stuff,
    has_8bit,
    prepare_payload,
    strip_bcc,
    stuffed_chunks,
)
from mapispool.transports.smtp.envelope import BadAddress, mail_options, needs_smtputf8, path
from mapispool.transports.smtp.long_lines import LongLineScanner, has_long_line
from mapispool.transports.smtp.outcome import Reply, Transaction, Verdict, decide
from mapispool.transports.smtp.replies import ReplyClass, classify, format_reply, is_closing


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (250, ReplyClass.OK),
        (251, ReplyClass.OK),
        (354, ReplyClass.INTERMEDIATE),
        (421, ReplyClass.TEMPORARY),
        (451, ReplyClass.TEMPORARY),
        (550, ReplyClass.PERMANENT),
        (199, ReplyClass.INVALID),
        (600, ReplyClass.INVALID),
        (-1, ReplyClass.INVALID),
    ],
)
def test_classify_by_first_digit(code: int, kind: ReplyClass) -> None:
    """Reply codes are classed by their first digit; anything outside 2xx-5xx is invalid."""
    assert classify(code) is kind


def test_421_is_the_only_closing_reply() -> None:
    """Only 421 means the server is about to drop the session."""
    assert is_closing(421)
    assert not is_closing(450)


def test_format_reply_joins_lines() -> None:
    """Multi-line replies become one line for status strings and NDR texts."""
    assert format_reply(550, "5.1.1 no such user\nsee docs ") == "550 5.1.1 no such user / see docs"


def test_plain_and_login_strings() -> None:
    """PLAIN is \\0user\\0pass in base64; LOGIN sends the two parts separately."""
    assert base64.b64decode(plain_response("bob", "pw")) == b"\0bob\0pw"
    user, password = login_responses("bob", "pw")
    assert (base64.b64decode(user), base64.b64decode(password)) == (b"bob", b"pw")


def test_xoauth2_string() -> None:
    """XOAUTH2 is user=U^Aauth=Bearer T^A^A in base64 (Google's and Microsoft's format)."""
    decoded = base64.b64decode(xoauth2_response("bob@x.test", "tok"))
    assert decoded == b"user=bob@x.test\x01auth=Bearer tok\x01\x01"


def test_oauthbearer_string_escapes_the_authzid() -> None:
    """OAUTHBEARER has a GS2 header whose authzid escapes ',' and '=' (RFC 7628, 5801)."""
    decoded = base64.b64decode(oauthbearer_response("a,b=c", "tok", "smtp.x.test", 587))
    assert decoded == b"n,a=a=2Cb=3Dc,\x01host=smtp.x.test\x01port=587\x01auth=Bearer tok\x01\x01"
    assert base64.b64decode(ERROR_CHALLENGE_ANSWER[Mechanism.OAUTHBEARER]) == b"\x01"
    assert ERROR_CHALLENGE_ANSWER[Mechanism.XOAUTH2] == b""


@pytest.mark.parametrize(
    ("configured", "offered", "token", "expected"),
    [
        ("auto", "PLAIN LOGIN", False, Mechanism.PLAIN),
        ("auto", "LOGIN CRAM-MD5", False, Mechanism.LOGIN),
        ("auto", "PLAIN XOAUTH2 OAUTHBEARER", True, Mechanism.XOAUTH2),
        ("auto", "OAUTHBEARER", True, Mechanism.OAUTHBEARER),
        ("login", "PLAIN", False, Mechanism.LOGIN),
        ("xoauth2", "PLAIN", True, Mechanism.XOAUTH2),
    ],
)
def test_choose_mechanism(configured: str, offered: str, token: bool, expected: Mechanism) -> None:
    """auto prefers PLAIN over LOGIN and XOAUTH2 over OAUTHBEARER; an explicit choice wins."""
    assert choose_mechanism(configured, parse_offered(offered), have_token=token) is expected


def test_choose_mechanism_explains_what_is_missing() -> None:
    """With nothing usable on offer, the error names the offer and the setting to change."""
    with pytest.raises(NoMechanism, match=r"CRAM-MD5.*set auth"):
        choose_mechanism("auto", ["CRAM-MD5"], have_token=False)
    with pytest.raises(NoMechanism, match="STARTTLS"):
        choose_mechanism("plain", [], have_token=False)


def test_dot_stuff_normalises_and_escapes() -> None:
    """Line ends become CRLF, leading dots are doubled, and a final CRLF is added."""
    assert dot_stuff(b"a\n.b\r.\r\n..c") == b"a\r\n..b\r\n..\r\n...c\r\n"


def test_strip_bcc_removes_the_field_and_its_continuations() -> None:
    """A Bcc header (folded or Resent-) never reaches the wire; the body is untouched."""
    raw = (
        b"From: a@x.test\r\nBcc: hidden@x.test,\r\n  other@x.test\r\nTo: b@x.test\r\n"
        b"RESENT-BCC: h2@x.test\r\nSubject: s\r\n\r\nBcc: not a header\r\n"
    )
    stripped, found = strip_bcc(raw)
    assert found
    assert stripped == (
        b"From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nBcc: not a header\r\n"
    )
    assert strip_bcc(b"To: b@x.test\n\nbody\n") == (b"To: b@x.test\n\nbody\n", False)


def test_has_8bit() -> None:
    """Bytes above 127 mean the body needs 8BITMIME."""
    assert has_8bit("é".encode())
    assert not has_8bit(b"plain")


def test_paths() -> None:
    """Paths are bracketed; the null sender is <>; injection attempts are refused."""
    assert path("bob@x.test") == b"<bob@x.test>"
    assert path("", allow_null=True) == b"<>"
    for bad in ("", "bob@x.test>\r\nRCPT TO:<evil@x.test", "no-at-sign", "a b@x.test"):
        with pytest.raises(BadAddress):
            path(bad)
    assert needs_smtputf8(["jörg@x.test"])
    assert mail_options(size=10, eight_bit=True, smtputf8=True) == [
        b"SIZE=10",
        b"BODY=8BITMIME",
        b"SMTPUTF8",
    ]


OK = Reply(250, "ok")
GO = Reply(354, "go ahead")


def test_decide_mixed_recipients() -> None:
    """RCPT 2xx+DATA 2xx delivers, 5xx fails, 4xx waits for a later retry."""
    t = Transaction(OK, [OK, Reply(550, "5.1.1 no"), Reply(450, "4.2.0 later")], GO, OK)
    outcome = decide(t, 3)
    assert outcome.verdict is Verdict.DONE
    assert outcome.delivered == [0]
    assert outcome.failed == {1: Reply(550, "5.1.1 no")}
    assert outcome.deferred == [2]
    assert outcome.resend_later


def test_decide_whole_message_failures() -> None:
    """MAIL 5xx fails everyone; MAIL 4xx, 421 anywhere and 4xx after DATA retry it all."""
    assert decide(Transaction(Reply(553, "no")), 2).failed.keys() == {0, 1}
    assert decide(Transaction(Reply(451, "later")), 2).verdict is Verdict.RETRY
    assert decide(Transaction(OK, [OK, Reply(421, "bye")]), 2).verdict is Verdict.RETRY
    assert decide(Transaction(OK, [OK], GO, Reply(452, "full")), 1).verdict is Verdict.RETRY
    assert decide(Transaction(OK, [OK], Reply(421, "bye")), 1).verdict is Verdict.RETRY


def test_decide_permanent_after_data_fails_every_pending_recipient() -> None:
    """A 5xx to the content fails the accepted and the deferred recipients alike."""
    t = Transaction(OK, [OK, Reply(450, "later"), Reply(550, "no")], GO, Reply(554, "spam"))
    outcome = decide(t, 3)
    assert outcome.failed == {0: Reply(554, "spam"), 1: Reply(554, "spam"), 2: Reply(550, "no")}
    assert not outcome.deferred


def test_decide_all_refused_sends_no_data() -> None:
    """With no recipient accepted the outcome needs no DATA reply."""
    outcome = decide(Transaction(OK, [Reply(550, "no"), Reply(450, "later")]), 2)
    assert outcome.verdict is Verdict.DONE
    assert outcome.failed.keys() == {0}
    assert outcome.deferred == [1]


@given(
    st.binary().map(lambda b: bytes(b"a.\r\n"[x % 4] for x in b)),
    st.lists(st.integers(min_value=0, max_value=64), max_size=8),
)
def test_streamed_dot_stuffing_equals_the_whole_message_version(
    data: bytes, cuts: list[int]
) -> None:
    """However a message is cut into pieces, the streamed chunks join to dot_stuff(data)."""
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert b"".join(stuffed_chunks(pieces)) == dot_stuff(data)


def test_large_payload_is_streamed_with_bcc_removed(tmp_path: Path) -> None:
    """Above STREAM_ABOVE the payload is read from the store in pieces (never whole), the
    Bcc field is still removed and the 8-bit scan covers the whole message."""
    body = (b".line\n" * 300_000) + "é\n".encode()
    raw = b"To: a@x.test\nBcc: hidden@x.test\nSubject: big\n\n" + body
    path = tmp_path / "m"
    path.write_bytes(raw)
    payload, had_bcc, eight_bit = prepare_payload(
        len(raw), lambda: pytest.fail("a large message must not be loaded whole"),
        lambda: path.open("rb"), 64 * 1024,
    )  # fmt: skip
    assert had_bcc
    assert eight_bit
    assert payload.small is None
    streamed = b"".join(payload.chunks())
    assert streamed == dot_stuff(strip_bcc(raw)[0])
    assert max(len(c) for c in payload.chunks()) < 3 * 1024 * 1024


@given(
    st.binary().map(lambda b: b"".join((b"a", b".", b"\r\n", b"\xc3\xa9")[x % 4] for x in b)),
    st.lists(st.integers(min_value=0, max_value=64), max_size=8),
)
def test_streamed_dot_stuffing_of_crlf_content_equals_the_whole_message_version(
    data: bytes, cuts: list[int]
) -> None:
    """Canonical content (CRLF line ends only) streamed without the line-end pass gives
    the same bytes as dot_stuff, however it is cut (a cut may fall inside a CRLF)."""
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert b"".join(stuffed_chunks(pieces, crlf=True)) == dot_stuff(data)


def test_canonical_content_is_sent_as_stored_with_its_stored_8bit_flag() -> None:
    """A canonical message is only dot-stuffed: no Bcc search (a "Bcc:" line after the
    header is body) and the stored 8-bit flag is used as given, not re-scanned."""
    raw = b"To: a@x.test\r\nSubject: s\r\n\r\n.dot\r\nBcc: body text\r\ncaf\xc3\xa9\r\n"
    for flag in (True, False):
        payload, had_bcc, eight_bit = prepare_payload(
            len(raw), lambda: raw, lambda: pytest.fail("small: read inline"), 64 * 1024,
            canonical=True, eight_bit=flag,
        )  # fmt: skip
        assert (had_bcc, eight_bit) == (False, flag)
        assert payload.small == dot_stuff(raw)


def test_large_canonical_payload_is_streamed_as_stored(tmp_path: Path) -> None:
    body = (b".line\r\n" * 300_000) + "é\r\n".encode()
    raw = b"To: a@x.test\r\nSubject: big\r\n\r\n" + body
    path = tmp_path / "m"
    path.write_bytes(raw)
    payload, had_bcc, eight_bit = prepare_payload(
        len(raw), lambda: pytest.fail("a large message must not be loaded whole"),
        lambda: path.open("rb"), 64 * 1024, canonical=True, eight_bit=True,
    )  # fmt: skip
    assert (had_bcc, eight_bit, payload.small) == (False, True, None)
    assert b"".join(payload.chunks()) == dot_stuff(raw)


def test_a_canonical_message_with_a_long_line_is_still_folded_on_the_wire() -> None:
    raw = b"To: a@x.test\r\nSubject: s\r\n\r\n" + b"x" * 2000 + b"\r\n"
    payload, _had_bcc, eight_bit = prepare_payload(
        len(raw), lambda: raw, lambda: pytest.fail("small: read inline"), 64 * 1024,
        canonical=True, eight_bit=False,
    )  # fmt: skip
    assert payload.small is not None
    assert max(len(line) for line in payload.small.split(b"\r\n")) <= 998
    assert not eight_bit


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=1100), st.sampled_from([b"\r\n", b"\n", b"\r"])
        ),
        max_size=6,
    ),
    st.integers(min_value=0, max_value=1100),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=4),
)
def test_long_line_checks_agree_with_the_rfc_5322_limit(
    lines: list[tuple[int, bytes]], tail: int, cuts: list[int]
) -> None:
    """has_long_line, and LongLineScanner over any cut of the data, find a line over 998
    characters exactly when there is one (CR, LF and CRLF all end a line)."""
    data = b"".join(b"x" * n + end for n, end in lines) + b"y" * tail
    expected = any(n > 998 for n, _end in lines) or tail > 998
    assert has_long_line(data) is expected
    points = sorted({min(c, len(data)) for c in cuts})
    scanner = LongLineScanner()
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        scanner.feed(data[a:b])
    assert scanner.found is expected
