"""``mapispool-sendmail`` and ``mapispool sendmail``: a drop-in for /usr/sbin/sendmail as
mutt, git send-email and cron call it. Exit codes are sendmail's (sysexits): 0 queued (or
delivered, with -odi), 64 usage, 65 bad message, 66 no input, 69 refused for good (-odi),
75 try again later (or queued for a retry, with -odi), 78 configuration.

Modes: ``-bm`` (the default) queues the message on stdin, then delivers it as the
delivery mode says (``-odb`` background, ``-odi`` now, ``-odq`` queue only; the default
is the profile's ``[sendmail] delivery``); ``-bp`` lists the queue as ``mailq`` does;
``-q`` runs the queue (``mapispool flush --upload``).

This module keeps a process cheap: it imports only what reading the command line and the
message needs; ``sendmail_fast`` queues the message with the profile and the store alone,
and ``sendmail_deliver`` (the application layer, the spooler) runs only for -odi, -bp, -q
and PostgreSQL stores."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .sendmail_args import Invocation, UsageError, parse_args
from .sendmail_say import say

if TYPE_CHECKING:
    from .sendmail_fast import DaemonStore

EX_USAGE, EX_NOINPUT = 64, 66

_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_FROM_FIELD = re.compile(rb"(?im)^from[ \t]*:")


def default_profile_path() -> Path:
    """``$MAPISPOOL_PROFILE``, else ``profile.toml`` in the user's config directory (as
    ``session.default_profile_path``, without importing the session)."""
    if "MAPISPOOL_PROFILE" in os.environ:
        return Path(os.environ["MAPISPOOL_PROFILE"])
    from platformdirs import user_config_path

    return user_config_path("mapispool") / "profile.toml"


def read_message(stream: BinaryIO, ignore_dots: bool) -> bytes:
    """The message on stdin; without -i a line holding only "." ends it, as in sendmail.
    ``sendmail_client.read_message`` is the same: that module may not import this one
    (it loads it lazily, and a module-level import back would close a cycle) and must
    import next to nothing itself."""
    if ignore_dots:
        return stream.read()
    lines: list[bytes] = []
    for line in stream:
        if line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)


def strip_mbox_from_line(content: bytes) -> bytes:
    """Drop a leading mbox "From sender date" line: programs that write mbox-style
    messages (some cron and mail(1) setups) pass it, and sendmail/Postfix ignore it."""
    if content.startswith(b"From "):
        _line, sep, rest = content.partition(b"\n")
        return rest if sep else b""
    return content


def default_sender(env: Mapping[str, str] | None = None) -> str:
    """``user@host-fqdn``, as sendmail makes the sender of a message without -f; the
    user is the login name of the environment ``env`` (this process's by default) as
    ``getpass.getuser`` reads it, else the name of this process's uid."""
    from ..fqdn import host_fqdn

    env = os.environ if env is None else env
    names = (env.get(name) for name in ("LOGNAME", "USER", "LNAME", "USERNAME"))
    user = next((name for name in names if name), None)
    if user is None:
        import getpass

        user = getpass.getuser()
    return f"{user}@{host_fqdn()}"


def format_from(name: str | None, address: str) -> str:
    """A From field value: ``Name <address>``, the name quoted when it has specials and
    RFC 2047-encoded when it is not ASCII (as ``email.utils.formataddr`` does)."""
    if not name:
        return address
    if not name.isascii():
        import email.utils

        return email.utils.formataddr((name, address))
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def header_block(content: bytes) -> bytes:
    found = [i for sep in (b"\r\n\r\n", b"\n\n") if (i := content.find(sep)) >= 0]
    return content[: min(found)] if found else content


def prepare_message(content: bytes, inv: Invocation, env: Mapping[str, str] | None = None) -> bytes:
    """Drop an mbox "From " line; add a From field when the message has none, from -F and
    -f (or the login name at the host, in the caller's environment ``env``), as sendmail
    does."""
    content = strip_mbox_from_line(content)
    if _FROM_FIELD.search(header_block(content)):
        return content
    address = inv.sender if inv.sender not in (None, "", "<>") else default_sender(env)
    address = str(address).strip("<>")
    newline = b"\r\n" if b"\r\n" in content[:2000] else b"\n"
    return f"From: {format_from(inv.full_name, address)}".encode() + newline + content


def header_recipients(content: bytes) -> list[str]:
    """The addresses of the To, Cc and Bcc fields (-t)."""
    import email.utils
    from email.parser import BytesHeaderParser

    headers = BytesHeaderParser().parsebytes(header_block(content) + b"\n\n")
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in headers.get_all(name, [])]
    return [addr for _name, addr in email.utils.getaddresses(values) if addr]


def submit_params(content: bytes, inv: Invocation) -> dict[str, Any]:
    """the ``submit`` operation's's parameters. With -t the headers' recipients are taken, and
    addresses given as arguments are added to them, as Postfix does (Sendmail would
    remove them instead)."""
    recipients: list[str] | None = list(inv.recipients)
    if inv.from_headers:
        recipients = header_recipients(content) + inv.recipients if inv.recipients else None
    return {"content": content, "recipients": recipients, "sender": inv.sender, "via": "sendmail"}


def run(
    args: list[str] | tuple[str, ...],
    stdin: BinaryIO,
    profile_path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    submission_key: str | None = None,
    daemon_store: DaemonStore | None = None,
) -> int:
    """One sendmail invocation; returns the sysexits code.

    A daemon runs an invocation handed to it (``sendmail_served``) with the caller's
    environment ``env`` and working directory ``cwd``, the client's ``submission_key``
    and its own store (``daemon_store``); what it does not run raises
    ``sendmail_fast.NotHere`` before stdin is read."""
    try:
        inv = parse_args(args)
    except UsageError as exc:
        say(str(exc))
        return EX_USAGE
    given = Path(cwd, inv.profile) if inv.profile and cwd else inv.profile
    path = given or profile_path or default_profile_path()
    if daemon_store is not None and inv.mode in ("p", "q"):
        from .sendmail_fast import NotHere

        raise NotHere(f"-b{inv.mode}" if inv.mode == "p" else "-q")
    if inv.mode in ("p", "q"):
        from .sendmail_deliver import list_queue, run_queue

        return list_queue(path) if inv.mode == "p" else run_queue(path)
    if not inv.recipients and not inv.from_headers:
        say("no recipients: give addresses or use -t")
        return EX_USAGE
    content = read_message(stdin, inv.ignore_dots)
    if not content.strip():
        say("the message on standard input is empty")
        return EX_NOINPUT
    params = submit_params(prepare_message(content, inv, env), inv)
    from .sendmail_fast import queue_and_deliver

    code = queue_and_deliver(path, params, inv.delivery, submission_key, daemon_store)
    if code is None:  # -odi, or a PostgreSQL store: the full path
        from .sendmail_deliver import queue_and_deliver as full_path

        code = full_path(path, params, inv.delivery)
    return code


def main() -> None:
    """``mapispool-sendmail`` in this process alone (the script's entry point is
    ``sendmail_client.main``, which tries a running daemon first)."""
    sys.exit(run(sys.argv[1:], sys.stdin.buffer))
