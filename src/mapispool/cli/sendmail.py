"""``mapispool sendmail`` and ``mapispool-sendmail``: a drop-in for /usr/sbin/sendmail as
mutt, git send-email and cron call it. The message on stdin is queued; a running
``mapispool serve`` sends it (or the next ``mapispool flush``).

Exit codes are sendmail's (sysexits): 0 queued, 64 usage, 65 bad message, 66 no input,
75 try again later, 78 configuration.
"""

from __future__ import annotations

import email.utils
import getpass
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import click

from ..daemon.client import connect
from ..daemon.client import submit as queue_message
from ..mapi import MapiError
from ..profile import Profile
from ..session import default_profile_path
from .errors import EX_NOINPUT, EX_OK, EX_USAGE, describe, exit_code
from .submit import add_missing_headers

#: Flags that take a value (attached, ``-fbob``, or as the next argument).
_WITH_VALUE = set("fFrBNRVXCLhpO")


class UsageError(Exception):
    """A command line sendmail would refuse (EX_USAGE)."""


@dataclass
class Invocation:
    """A parsed sendmail command line."""

    recipients: list[str] = field(default_factory=list)
    from_headers: bool = False  # -t
    ignore_dots: bool = False  # -i / -oi
    sender: str | None = None  # -f / -r
    full_name: str | None = None  # -F
    profile: Path | None = None
    mode: str = "m"  # -bm deliver; -bp list the queue


def parse_args(args: Sequence[str]) -> Invocation:
    """Parse sendmail's options; flags we have no use for are accepted and ignored."""
    inv = Invocation()
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if arg == "--":
            inv.recipients.extend(items[i:])
            break
        if arg.startswith("--profile"):
            value = arg.partition("=")[2]
            if not value:
                if i >= len(items):
                    raise UsageError("--profile needs a file")
                value, i = items[i], i + 1
            inv.profile = Path(value)
            continue
        if not arg.startswith("-") or arg == "-":
            inv.recipients.append(arg)
            continue
        flag, rest = arg[1:2], arg[2:]
        if flag in _WITH_VALUE:
            if not rest:
                if i >= len(items):
                    raise UsageError(f"-{flag} needs a value")
                rest, i = items[i], i + 1
            if flag in "fr":
                inv.sender = rest
            elif flag == "F":
                inv.full_name = rest
        elif flag == "t":
            inv.from_headers = True
        elif flag == "i":
            inv.ignore_dots = True
        elif flag == "o":
            # -oi is -i; every other -oX (-odi, -oem, -oQ...) is a delivery knob we ignore.
            if rest == "i":
                inv.ignore_dots = True
        elif flag == "b":
            if rest not in ("m", "p"):
                raise UsageError(
                    f"-b{rest} is not supported; mapispool only queues (-bm) or lists (-bp)"
                )
            inv.mode = rest
        # Anything else (-v, -m, -n, -U, -G, -Am, -q...) changes nothing for a queue.
    return inv


def read_message(stream: BinaryIO, ignore_dots: bool) -> bytes:
    """The message on stdin; without -i a line holding only "." ends it, as in sendmail."""
    if ignore_dots:
        return stream.read()
    lines: list[bytes] = []
    for line in stream:
        if line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)


def _default_sender() -> str:
    return f"{getpass.getuser()}@{socket.getfqdn()}"


def strip_mbox_from_line(content: bytes) -> bytes:
    """Drop a leading mbox "From sender date" line: programs that write mbox-style
    messages (some cron and mail(1) setups) pass it, and sendmail/Postfix ignore it."""
    if content.startswith(b"From "):
        _line, sep, rest = content.partition(b"\n")
        return rest if sep else b""
    return content


def prepare_message(content: bytes, inv: Invocation) -> bytes:
    """Add a From header when the message has none (from -F and -f, as sendmail does)."""
    content = strip_mbox_from_line(content)
    address = inv.sender or _default_sender()
    sender = email.utils.formataddr((inv.full_name or "", address))
    return add_missing_headers(content, {"From": sender})


def run(args: Sequence[str], stdin: BinaryIO, profile_path: Path | None = None) -> int:
    """Queue the message; returns the sysexits code."""
    try:
        inv = parse_args(args)
    except UsageError as exc:
        click.echo(f"sendmail: {exc}", err=True)
        return EX_USAGE
    try:
        profile = Profile.load(inv.profile or profile_path or default_profile_path())
        if inv.mode == "p":
            entries = connect(profile, _warn).call("queue_list", {})
            if not entries:
                click.echo("Mail queue is empty")  # what mailq says; scripts look for it
            for entry in entries:
                click.echo(f"{entry['entry_id']} {entry['state']:<10} {entry['subject']}")
            return EX_OK
        if not inv.recipients and not inv.from_headers:
            click.echo("sendmail: no recipients: give addresses or use -t", err=True)
            return EX_USAGE
        content = read_message(stdin, inv.ignore_dots)
        if not content.strip():
            click.echo("sendmail: the message on standard input is empty", err=True)
            return EX_NOINPUT
        content = prepare_message(content, inv)
        # -t takes the headers' recipients; addresses on the command line are added to
        # them, as Postfix does (Sendmail would remove them instead).
        recipients: list[str] | None = list(inv.recipients)
        if inv.from_headers:
            recipients = _header_recipients(content) + inv.recipients if inv.recipients else None
        # Written to the store by this process (any size); a running daemon is woken.
        queue_message(
            profile,
            {"content": content, "recipients": recipients, "sender": inv.sender, "via": "sendmail"},
            _warn,
        )
    except MapiError as exc:
        click.echo(f"sendmail: {describe(exc)}", err=True)
        return exit_code(exc)
    return EX_OK


def _warn(text: str) -> None:
    click.echo(f"sendmail: warning: {text}", err=True)


def _header_recipients(content: bytes) -> list[str]:
    from email.parser import BytesHeaderParser

    headers = BytesHeaderParser().parsebytes(content)
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in headers.get_all(name, [])]
    return [addr for _name, addr in email.utils.getaddresses(values) if addr]


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    epilog="\b\nExamples:\n  mapispool sendmail -t < message.eml\n"
    "  git config sendemail.sendmailcmd 'mapispool sendmail'\n"
    '  set sendmail = "mapispool sendmail"   (muttrc)',
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def sendmail(ctx: click.Context, args: tuple[str, ...]) -> None:
    """A sendmail-compatible way in: -t, -i/-oi, -f SENDER, -F NAME, recipients as
    arguments, the message on stdin. Other sendmail flags are accepted and ignored."""
    from .context import Cli

    cli = ctx.find_object(Cli)
    ctx.exit(run(args, sys.stdin.buffer, cli.profile_path if cli else None))


def sendmail_main() -> None:
    """Entry point of the ``mapispool-sendmail`` script."""
    sys.exit(run(sys.argv[1:], sys.stdin.buffer))
