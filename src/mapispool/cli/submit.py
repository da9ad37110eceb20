"""``mapispool submit``: queue one RFC 5322 message."""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..daemon.client import submit as queue_message
from .context import Cli, pass_cli
from .errors import EX_USAGE

_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 60.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


#: The last moment a send-later time may name: the start of 31 December 9999 (UTC), so that
#: the message's lifetime, counted from then, still ends in a year ``datetime`` can show.
LATEST_SEND_AT = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


def parse_send_at(text: str, now: float | None = None) -> float:
    """``+10m`` / ``+2h`` / ``+30s`` / ``+1d`` (a bare ``+N`` is minutes) or an ISO 8601
    time (local time when it has no offset) → a POSIX timestamp. A time past year 9999
    is a usage error naming --send-at."""
    now = time.time() if now is None else now
    match = _RELATIVE.match(text.strip())
    if match:
        moment = now + float(match.group(1)) * _UNITS[match.group(2)]
    else:
        try:
            # naive: local time, as a person typing it means
            moment = datetime.fromisoformat(text.strip()).timestamp()
        except (ValueError, OverflowError) as exc:
            raise click.BadParameter(
                f"{text!r} is neither +10m/+2h/+1d nor an ISO time like 2030-01-31T09:00",
                param_hint="--send-at",
            ) from exc
    if not moment <= LATEST_SEND_AT:
        raise click.BadParameter(
            f"{text!r} is too far ahead; give a time before 9999-12-31T00:00Z",
            param_hint="--send-at",
        )
    return moment


def add_missing_headers(content: bytes, headers: dict[str, str]) -> bytes:
    """Prepend the headers the message lacks (To/Cc from --to/--cc on a bare message)."""
    block = content.split(b"\n\n", 1)[0].lower()
    newline = b"\r\n" if b"\r\n" in content[:2000] else b"\n"
    added = b""
    for name, value in headers.items():
        if value and not re.search(rb"(^|\n)" + name.lower().encode() + rb":", block):
            added += f"{name}: {value}".encode() + newline
    return added + content


def refuse_line_breaks(option: str, values: tuple[str | None, ...]) -> None:
    """An address option with a CR or LF would start a header of its own: one line
    naming the option, exit 64 (issue #13)."""
    for value in values:
        if value is not None and any(ch in value for ch in "\r\n\0"):
            shown = value.encode("unicode_escape").decode("ascii")
            click.echo(f"mapispool: error: {option} {shown!r} contains a line break; "
                       "give one address per option", err=True)  # fmt: skip
            raise SystemExit(EX_USAGE)


def read_message(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise click.FileError(source, exc.strerror) from exc


@click.command(
    epilog="\b\nExamples:\n  mapispool submit message.eml\n"
    "  mapispool submit --to bob@example.com --send-at +10m - < note.txt"
)
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option("--to", multiple=True, metavar="ADDR", help="A recipient (repeatable).")
@click.option("--cc", multiple=True, metavar="ADDR", help="A Cc recipient (repeatable).")
@click.option("--bcc", multiple=True, metavar="ADDR", help="A Bcc recipient (repeatable).")
@click.option("--from", "sender", metavar="ADDR", help="The envelope sender.")
@click.option("--send-at", metavar="WHEN", help="Send later: +10m, +2h, or an ISO time.")
@pass_cli
def submit(
    cli: Cli,
    source: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    sender: str | None,
    send_at: str | None,
) -> None:
    """Queue a message (a file, or stdin with -) and print its entry id in hex.
    Recipients come from the To/Cc/Bcc headers unless --to/--cc/--bcc are given."""
    for option, values in (("--to", to), ("--cc", cc), ("--bcc", bcc), ("--from", (sender,))):
        refuse_line_breaks(option, values)
    content = read_message(source)
    explicit = bool(to or cc or bcc)
    if explicit:
        content = add_missing_headers(content, {"To": ", ".join(to), "Cc": ", ".join(cc)})
    params: dict[str, Any] = {
        "content": content,
        "recipients": list(to) if explicit else None,
        "cc": list(cc),
        "bcc": list(bcc),
        "send_at": parse_send_at(send_at) if send_at else None,
        "sender": sender,
    }
    # Written to the store by this process, whatever its size; a daemon is only woken.
    entry_id, woken = queue_message(cli.profile, params, cli.warn)
    click.echo(entry_id)
    if not woken and not cli.quiet:
        click.echo("queued; 'mapispool flush' or a running 'mapispool serve' sends it", err=True)
