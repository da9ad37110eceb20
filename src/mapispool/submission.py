"""Turning what a client submits (an ``EmailMessage`` or RFC 5322 bytes, and recipients)
into the content, MAPI properties and recipient rows the store keeps.

The stored content is the message in canonical form (issue #11), made here once and sent
as stored: every line ends with CRLF (a bare LF or CR becomes CRLF; no other byte of the
body changes, nothing is re-encoded), every Bcc and Resent-Bcc field is removed, in any
spelling a parser accepts (Bcc recipients are in the recipient table, never in the
transmitted header), and a missing Date or Message-ID is added once, so that it stays the
same across retries. ``Prepared.eight_bit`` says whether a byte is above 127, so that no
transport has to scan the content again to choose BODY=8BITMIME or SMTPUTF8.

Cheap to import (``mapispool-sendmail`` runs it in a process that queues one message):
``email.policy``, ``email.parser`` and ``email.message`` are imported only by the
submissions that need them (an ``EmailMessage``, or a header with 8-bit bytes or encoded
words).
"""

from __future__ import annotations

import email.utils
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeGuard

from .fqdn import host_fqdn
from .mapi import (
    MAPI_BCC,
    MAPI_CC,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NO_RECIPIENTS,
    MAPI_TO,
    PR_CLIENT_SUBMIT_TIME,
    PR_DEFERRED_SEND_TIME,
    PR_DELETE_AFTER_SUBMIT,
    PR_DISPLAY_BCC,
    PR_DISPLAY_CC,
    PR_DISPLAY_TO,
    PR_INTERNET_MESSAGE_ID,
    PR_MESSAGE_CLASS,
    PR_MESSAGE_FLAGS,
    PR_MESSAGE_SIZE,
    PR_SENDER_EMAIL_ADDRESS,
    PR_SENDER_NAME,
    PR_SUBJECT,
    MapiError,
    MessageFlags,
    RecipientType,
)
from .store.model import Recipient

if TYPE_CHECKING:
    from email.message import EmailMessage, Message

RecipientSpec = str | Recipient

#: A private property (the provider-defined range 0x6700-0x67FF) naming the way a message
#: came in; only the ways below make their NDRs travel back to the sender
#: (``spooler.bounce_to_sender``).
PR_MAPISPOOL_SUBMITTED_VIA = 0x6701001F
SUBMITTED_VIA_SENDMAIL = "sendmail"
SUBMITTED_VIA_LISTENER = "smtp-listener"


def origin_props(via: str) -> dict[int, Any]:
    """The properties to submit with a message that came in through ``via``."""
    return {PR_MAPISPOOL_SUBMITTED_VIA: via}


@dataclass(frozen=True)
class Prepared:
    """A message ready for ``Store.submit``."""

    content: bytes
    props: dict[int, Any]
    recipients: list[Recipient]
    #: True when ``content`` has a byte above 127 (``Store.submit(eight_bit=...)``).
    eight_bit: bool = False


def _invalid(message: str) -> MapiError:
    return MapiError(MAPI_E_INVALID_PARAMETER, message)


def check_address(address: str, what: str = "address") -> str:
    """Refuse empty addresses and CR/LF injection; return the address stripped."""
    if any(ch in address for ch in "\r\n\0"):
        raise _invalid(f"the {what} {address!r} contains a line break; remove it")
    address = address.strip()
    if not address:
        raise _invalid(f"an empty {what}; give an address like bob@example.com")
    return address


def parse_recipient(spec: RecipientSpec, recipient_type: RecipientType = MAPI_TO) -> Recipient:
    """``"TYPE:address"`` (a MAPI one-off, e.g. ``"FAX:+3312345"``) or a bare address
    (SMTP) → ``Recipient``. ``Recipient`` objects are checked and passed through."""
    if isinstance(spec, Recipient):
        check_address(spec.address)
        return spec
    if not isinstance(spec, str):
        raise _invalid(f"a recipient must be a string like 'SMTP:bob@example.com', not {spec!r}")
    text = check_address(spec, "recipient")
    addrtype, sep, address = text.partition(":")
    if (
        sep
        and addrtype
        and addrtype.replace("-", "").replace("_", "").isalnum()
        and "@" not in addrtype
    ):
        return Recipient(address=check_address(address, "recipient"), addrtype=addrtype.upper(),
                         recipient_type=recipient_type)  # fmt: skip
    name, addr = email.utils.parseaddr(text)
    if not addr or "@" not in addr:
        raise _invalid(f"{text!r} is not an email address; write bob@example.com or TYPE:addr")
    return Recipient(
        address=addr, addrtype="SMTP", recipient_type=recipient_type, display_name=name
    )


def _header_recipient(name: str, addr: str, rtype: RecipientType) -> Recipient:
    """A recipient taken from a To/Cc/Bcc header (already split by getaddresses)."""
    address = check_address(addr, "recipient")
    if "@" not in address:
        raise _invalid(f"{address!r} is not an email address; write bob@example.com")
    return Recipient(address=address, addrtype="SMTP", recipient_type=rtype, display_name=name)


def crlf_line_ends(raw: bytes) -> bytes:
    """``raw`` with every bare LF and bare CR turned into CRLF, every other byte as it
    was; the same object when it had none (no copy of a large message). Counting and
    ``bytes.replace`` run in C: a regular expression took over ten times longer on a
    large message."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") == crlf and raw.count(b"\r") == crlf:
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _split_header(raw: bytes) -> tuple[bytes, bytes, int]:
    """(header block, separator, offset of the body) of RFC 5322 bytes with CRLF line
    ends."""
    index = raw.find(b"\r\n\r\n")
    if index >= 0:
        return raw[:index], b"\r\n\r\n", index + 4
    return raw, b"", len(raw)


#: A header line whose field name is Bcc or Resent-Bcc, in any case, with blanks allowed
#: before the colon (the obsolete syntax of RFC 5322 §4.5.3, which parsers and
#: ``_Headers`` accept, so it must count for removal too).
_BCC_FIELD = re.compile(rb"(?i)(resent-)?bcc[ \t]*:")


def _drop_bcc(block: bytes) -> tuple[bytes, bool]:
    """``block`` without any Bcc or Resent-Bcc field (continuation lines included), and
    whether one was removed. Bcc recipients live in the recipient table; no form of the
    field may reach a recipient, since some transports deliver the stored bytes as they
    are. The result ends with a line break exactly when ``block`` did."""
    kept: list[bytes] = []
    skipping = dropped = False
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = bool(_BCC_FIELD.match(line))
        dropped = dropped or skipping
        if not skipping:
            kept.append(line)
    if not dropped:
        return block, False
    result = b"".join(kept)
    if not block.endswith(b"\n"):
        # The separator after the block supplies the last line break.
        result = result.removesuffix(b"\n").removesuffix(b"\r")
    return result, True


_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_INJECTED = re.compile(r"(\r\n|\r|\n)(?![ \t])")


def _check_header_block(block: bytes) -> None:
    """Refuse a header block that is not header fields: a line that is neither
    ``Name: value`` nor a continuation, or 8-bit bytes that are not UTF-8 (RFC 6532)."""
    for number, line in enumerate(block.splitlines(), start=1):
        if line[:1] in (b" ", b"\t") and number > 1:
            continue
        if not _FIELD.match(line):
            shown = line[:60].decode("ascii", "backslashreplace")
            raise _invalid(
                f"line {number} of the message header is not a header field ({shown!r}); "
                "a message is header fields (Name: value), an empty line, then the body"
            )
    try:
        block.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = block.rfind(b"\n", 0, exc.start) + 1
        name = block[start:].split(b":", 1)[0].decode("ascii", "replace")
        raise _invalid(
            f"the {name} header has 8-bit bytes that are not UTF-8; encode it "
            "(RFC 2047, as email.message.EmailMessage does) or write it in UTF-8"
        ) from None


def _check_injection(message: Message) -> None:
    """A header value given through the API must not start a new header line."""
    for name, value in message.items():
        if _INJECTED.search(str(name)) or _INJECTED.search(str(value)):
            raise _invalid(
                f"the {str(name).strip()!r} header contains a line break that would start a "
                "new header; remove the CR/LF from its value"
            )


class _Headers:
    """The header fields of a submission as text: unfolded, RFC 2047 decoded.

    A plain header block (ASCII, no encoded words: nearly every message a program sends)
    is read with the fast compat32 parser; anything else with ``email.policy.default``,
    which decodes and parses properly and is several times slower."""

    _NEEDS_DECODING = re.compile(rb"=\?|[\x80-\xff]")
    _FOLD = re.compile(r"\r?\n(?=[ \t])")
    _BLANK_BEFORE_COLON = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.M)
    _PLAIN_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.M)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    @classmethod
    def parse(cls, block: bytes) -> _Headers:
        data = block + b"\r\n\r\n"
        if cls._NEEDS_DECODING.search(block):
            from email.parser import BytesHeaderParser
            from email.policy import default

            # The email package stops reading the header at a name followed by blanks
            # ("Bcc : x"), which RFC 5322's obsolete syntax allows and the plain reader
            # below accepts: close the gap so that both read the same fields.
            data = cls._BLANK_BEFORE_COLON.sub(rb"\1:", data)
            parsed = BytesHeaderParser(policy=default).parsebytes(data)
            return cls([(name, str(value)) for name, value in parsed.items()])
        # _check_header_block has already refused anything but fields and continuations.
        text = block.decode("ascii")
        return cls(
            [
                (match[1], cls._FOLD.sub("", match[2]).rstrip("\r\n"))
                for match in cls._PLAIN_FIELD.finditer(text)
            ]
        )

    def get_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for field, value in self._fields if field.lower() == lower]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None


def _message_class() -> type[Message]:
    from email.message import Message

    return Message


def _is_message(value: object) -> TypeGuard[Message]:
    """Whether ``value`` is an ``email.message.Message``, without importing that module
    when nothing has: no object can be of a class that was never defined."""
    return "email.message" in sys.modules and isinstance(value, _message_class())


def message_id_domain(sender: str | None, from_field: str | None) -> str:
    """The domain of a Message-ID we add: the envelope sender's, else the From address's,
    else the host's FQDN (issue #13: never a made-up ``.invalid`` domain)."""
    candidates = [sender or ""]
    candidates += [addr for _n, addr in email.utils.getaddresses([from_field or ""])]
    for address in candidates:
        domain = address.strip("<> ").rpartition("@")[2]
        if "@" in address and domain and not any(ch in domain for ch in "\r\n <>"):
            return domain
    return host_fqdn()


def prepare(
    message: EmailMessage | Message | bytes,
    *,
    recipients: Sequence[RecipientSpec] | None,
    now: datetime,
    deferred_send_time: datetime | None = None,
    delete_after_submit: bool = False,
    sender: str | None = None,
) -> Prepared:
    """Validate and convert a submission. Raises ``MapiError`` naming what is wrong."""
    if _is_message(message):
        from email.policy import SMTP  # not "import email.policy": that makes "email" local

        _check_injection(message)
        raw = message.as_bytes(policy=SMTP)
    elif isinstance(message, bytes):
        raw = message
    elif isinstance(message, bytearray | memoryview):
        raw = bytes(message)
    else:
        raise _invalid("submit() takes an email.message.EmailMessage or RFC 5322 bytes")
    if not raw or raw.isspace():
        raise _invalid("the message is empty")
    raw = crlf_line_ends(raw)
    block, sep, body_start = _split_header(raw)
    _check_header_block(block)
    # Only the header block is parsed: a large body is never decoded or copied here.
    headers = _Headers.parse(block)

    rows: list[Recipient] = []
    if recipients is None:
        for field, rtype in (("To", MAPI_TO), ("Cc", MAPI_CC), ("Bcc", MAPI_BCC)):
            for value in headers.get_all(field):
                if any(ch in str(value) for ch in "\r\n"):
                    raise _invalid(f"the {field} header contains a line break")
                for name, addr in email.utils.getaddresses([str(value)]):
                    if addr:
                        rows.append(_header_recipient(name, addr, rtype))
    else:
        if isinstance(recipients, str):
            raise _invalid("recipients must be a list of strings, not one string")
        rows = [parse_recipient(spec) for spec in recipients]
    if not rows:
        raise MapiError(
            MAPI_E_NO_RECIPIENTS,
            "the message has no recipients: add To/Cc/Bcc headers, or name them (--to on the "
            "command line, recipients= in the Python API)",
        )
    for index, row in enumerate(rows):
        row.row_id = index

    newline = b"\r\n"
    block, had_bcc = _drop_bcc(block)
    added = b""
    if headers.get("Date") is None:
        added += b"Date: " + email.utils.format_datetime(now).encode() + newline
    message_id = headers.get("Message-ID")
    if message_id is None:
        message_id = email.utils.make_msgid(domain=message_id_domain(sender, headers.get("From")))
        added += b"Message-ID: " + message_id.encode() + newline
    if added and not block:
        added = added.removesuffix(newline)  # the separator ends the last line
    if added or had_bcc:
        content = b"".join((added, block, sep, memoryview(raw)[body_start:]))
    else:
        content = raw  # unchanged: no copy of a large message

    from_header = headers.get("From")
    sender_addr = sender
    sender_name = ""
    senders = [(n, a) for n, a in email.utils.getaddresses([from_header or ""]) if a]
    if senders:
        sender_name = senders[0][0]
        if sender_addr is None:
            sender_addr = senders[0][1]
    if sender_addr is not None:
        sender_addr = "" if sender_addr in ("", "<>") else check_address(sender_addr, "sender")

    def display(rtype: RecipientType) -> str:
        return "; ".join(r.display_name or r.address for r in rows if r.recipient_type == rtype)

    props: dict[int, Any] = {
        PR_MESSAGE_CLASS: "IPM.Note",
        PR_SUBJECT: headers.get("Subject") or "",
        PR_CLIENT_SUBMIT_TIME: now,
        PR_INTERNET_MESSAGE_ID: str(message_id),
        PR_MESSAGE_SIZE: len(content),
        PR_MESSAGE_FLAGS: int(MessageFlags.MSGFLAG_UNSENT | MessageFlags.MSGFLAG_FROMME),
        PR_DISPLAY_TO: display(MAPI_TO),
        PR_DISPLAY_CC: display(MAPI_CC),
        PR_DISPLAY_BCC: display(MAPI_BCC),
    }
    if sender_addr is not None:
        props[PR_SENDER_EMAIL_ADDRESS] = sender_addr
        props[PR_SENDER_NAME] = sender_name
    if delete_after_submit:
        props[PR_DELETE_AFTER_SUBMIT] = True
    if deferred_send_time is not None:
        if deferred_send_time.tzinfo is None:
            deferred_send_time = deferred_send_time.astimezone(UTC)
        props[PR_DEFERRED_SEND_TIME] = deferred_send_time
    return Prepared(content=content, props=props, recipients=rows, eight_bit=not content.isascii())
