"""Turning the bytes of a server's reply into text that is safe to show and to store.

RFC 5321 replies are US-ASCII, or UTF-8 after SMTPUTF8; servers in the wild also answer
in their locale's 8-bit charset (``550 Empfänger unbekannt`` in Latin-1). The text goes
into reports (``PR_REPORT_TEXT``, NDRs), the queue's last error, the status row, logs and
the terminal, so it must decode whatever the bytes, and must not carry control characters
(an escape sequence in a reply would otherwise reach a terminal).

The rule: UTF-8 when the bytes are valid UTF-8; otherwise Windows-1252, the superset of
Latin-1 that 8-bit servers actually send, with U+FFFD for its five undefined bytes. Every
control character except tab and the line break that joins a multi-line reply becomes U+FFFD.
"""

from __future__ import annotations

import re

#: C0 controls (but tab and the newline that joins reply lines), DEL and C1 controls.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
REPLACEMENT = "\ufffd"


def decode_reply(raw: bytes) -> str:
    """The text of a reply's bytes (code and separator already removed, lines joined
    with ``\\n``), decoded and cleaned as the module says. Never raises."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", "replace")
    return _CONTROLS.sub(REPLACEMENT, text)


def clean_reply(text: str) -> str:
    """``decode_reply`` for a text another library decoded with ``surrogateescape``
    (aiosmtplib does, for the greeting, EHLO, STARTTLS and AUTH): the original bytes are
    recovered and decoded by our rule."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that surrogateescape did not make
        raw = text.encode("utf-8", "replace")
    return decode_reply(raw)
