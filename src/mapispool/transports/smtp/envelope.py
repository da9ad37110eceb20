"""The SMTP envelope (RFC 5321 §4.1.2): reverse-path and forward-paths as bytes.

Addresses come from MAPI properties (``PR_SENDER_EMAIL_ADDRESS``, each recipient's
address), never from re-parsing the message's headers.
"""

from __future__ import annotations

import re

from .outcome import Reply

_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>]")


class BadAddress(ValueError):
    """An address that cannot be put on the wire as an SMTP path."""


def needs_smtputf8(addresses: list[str]) -> bool:
    """True when an address has non-ASCII characters (RFC 6531 SMTPUTF8)."""
    return any(not address.isascii() for address in addresses)


def path(address: str, *, allow_null: bool = False) -> bytes:
    """``<address>`` in UTF-8 (ASCII unless SMTPUTF8 was negotiated); ``<>`` for the empty
    null reverse-path when ``allow_null``. Raises ``BadAddress`` for control characters,
    spaces or angle brackets, which would let an address inject commands."""
    if address == "":
        if allow_null:
            return b"<>"
        raise BadAddress("empty recipient address")
    if _FORBIDDEN.search(address) or address.count("@") < 1:
        raise BadAddress(f"{address!r} is not a valid SMTP address")
    return b"<" + address.encode() + b">"


def mail_options(*, size: int | None, eight_bit: bool, smtputf8: bool) -> list[bytes]:
    """The MAIL FROM parameters for the extensions the server offered and the message
    needs: ``SIZE=`` (RFC 1870), ``BODY=8BITMIME`` (RFC 6152), ``SMTPUTF8`` (RFC 6531)."""
    options: list[bytes] = []
    if size is not None:
        options.append(b"SIZE=%d" % size)
    if eight_bit:
        options.append(b"BODY=8BITMIME")
    if smtputf8:
        options.append(b"SMTPUTF8")
    return options


def local_refusal(verb: bytes, address: str, utf8_ok: bool) -> Reply | None:
    """The reply a server would give to an address that cannot go on the wire, or None.
    Such addresses are refused here, so they get an NDR instead of blocking the queue."""
    try:
        path(address, allow_null=verb == b"MAIL")
    except BadAddress as exc:
        return Reply(553, f"5.1.3 {exc}")
    if not address.isascii() and not utf8_ok:
        return Reply(553, f"5.6.7 {address!r} needs SMTPUTF8, which the server lacks")
    return None
