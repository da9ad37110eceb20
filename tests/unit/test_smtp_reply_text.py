"""Server text in the smtp transport: decoding any bytes, and redacting the secret."""

from __future__ import annotations

import base64

from mapispool.mapi import MAPI_E_LOGON_FAILED
from mapispool.transports.smtp.errors import SmtpError
from mapispool.transports.smtp.reply_text import clean_reply, decode_reply
from mapispool.transports.smtp.secrets import Redactor
from mapispool.transports.smtp.settings import parse_settings


def test_utf8_first_then_windows_1252() -> None:
    assert decode_reply("Empfänger unbekannt".encode()) == "Empfänger unbekannt"
    assert decode_reply("Empfänger €".encode("cp1252")) == "Empfänger €"
    assert decode_reply(b"undefined \x81 byte") == "undefined \ufffd byte"


def test_controls_become_replacement_characters_but_lines_stay() -> None:
    assert decode_reply(b"a\x1b[31mb\x00c\td\ne\x7f") == "a\ufffd[31mb\ufffdc\td\ne\ufffd"


def test_surrogateescape_text_from_aiosmtplib_is_decoded_by_the_same_rule() -> None:
    escaped = b"Empf\xe4nger".decode("utf-8", "surrogateescape")
    assert clean_reply(escaped) == "Empfänger"
    assert clean_reply("lone \ud800") == "lone ?"


def test_redactor_removes_every_form_the_auth_exchange_sent() -> None:
    settings = parse_settings({"host": "mx.example.test", "port": 587})
    secret = "hunter2-secret"
    redactor = Redactor.for_secret(settings, "alice", secret)
    plain = base64.b64encode(b"\0alice\0" + secret.encode()).decode()
    login = base64.b64encode(secret.encode()).decode()
    text = f"535 {secret} {plain} {login} {login.rstrip('=')} ok"
    assert redactor.text(text) == "535 *** *** *** *** ok"
    assert Redactor().text(text) == text


def test_redactor_scrubs_an_error_and_its_causes() -> None:
    settings = parse_settings({"host": "mx.example.test", "port": 587})
    redactor = Redactor.for_secret(settings, "alice", "hunter2-secret")
    cause = ValueError("server said hunter2-secret")
    error = SmtpError(MAPI_E_LOGON_FAILED, "failed", reply="535 hunter2-secret")
    error.__cause__ = cause
    assert redactor.scrub(error) is error
    assert error.reply == "535 ***"
    assert "hunter2" not in str(error)
    assert str(cause) == "server said ***"


def test_a_short_secret_is_redacted_only_where_it_stands_apart() -> None:
    """A 3-letter token must not mangle 'token'; alone it is still removed."""
    redactor = Redactor(["tok"])
    assert redactor.text("535 bad token tok 'tok'") == "535 bad token *** '***'"
    assert Redactor(["ab"]).text("ab") == "ab"  # too short to redact at all
