"""The command line of ``mapispool sendmail`` / ``mapispool-sendmail``, parsed the way
sendmail and Postfix parse theirs, and checked so that nothing on it can add a header or
bend the envelope (issue #13).

Imports nothing heavy: the sendmail process loads this module first, before it knows
whether it has a message to queue at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Flags that take a value (attached, ``-fbob``, or as the next argument).
_WITH_VALUE = set("fFrBNRVXCLhpO")

#: How the message is delivered: sendmail's -odb (background: a Send/Receive that runs on
#: after this process exits), -odi (interactive: this process sends it), -odq (queue only).
_OD = {"b": "background", "i": "now", "q": "queue"}

_LINE_BREAK = re.compile(r"[\r\n]+")
#: One address (``user``, ``user@domain``, ``<user@domain>`` or the null sender ``<>``):
#: no blanks, no list separators, no comment or group syntax.
_ONE_ADDRESS = re.compile(r"^<?[^\s<>(),;:\"\\]*(@[^\s<>(),;:\"\\]+)?>?$")


class UsageError(Exception):
    """A command line sendmail would refuse (EX_USAGE, 64)."""


@dataclass
class Invocation:
    """A parsed sendmail command line."""

    recipients: list[str] = field(default_factory=list)
    from_headers: bool = False  # -t
    ignore_dots: bool = False  # -i / -oi
    sender: str | None = None  # -f / -r
    sender_flag: str = "-f"  # which of the two gave it (named in errors)
    full_name: str | None = None  # -F, line breaks folded into spaces
    profile: Path | None = None
    mode: str = "m"  # -bm deliver; -bp list the queue; -q run the queue
    delivery: str | None = None  # -odb/-odi/-odq; None: the profile's default


def fold_line_breaks(text: str) -> str:
    """``-F``'s rule, as in Postfix's sendmail: every run of CR and LF becomes one space,
    so that a full name can never start a header line of its own."""
    return _LINE_BREAK.sub(" ", text).strip()


def check_sender(value: str, flag: str) -> str:
    """The envelope sender of ``-f``/``-r``: one address without line breaks."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise UsageError(f"{flag}: the sender contains a line break; give one address")
    value = value.strip()
    if not _ONE_ADDRESS.match(value) or value.count("<") != value.count(">"):
        raise UsageError(f"{flag}: {value!r} is not one address; give one like me@example.com")
    return value


def check_recipient(value: str) -> str:
    """A recipient given as an argument: no line breaks (it reaches the envelope)."""
    if "\r" in value or "\n" in value or "\0" in value:
        shown = value.encode("unicode_escape").decode("ascii")
        raise UsageError(
            f"recipient {shown!r} contains a line break; give one address per argument"
        )
    return value


def _take_value(flag: str, rest: str, items: list[str], i: int) -> tuple[str, int]:
    if rest:
        return rest, i
    if i >= len(items):
        raise UsageError(f"-{flag} needs a value")
    return items[i], i + 1


def parse_args(args: Sequence[str]) -> Invocation:
    """Parse sendmail's options; flags we have no use for are accepted and ignored.
    Raises ``UsageError`` naming the flag for anything that would inject a header or
    break the envelope."""
    inv = Invocation()
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if arg == "--":
            inv.recipients.extend(check_recipient(a) for a in items[i:])
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
            inv.recipients.append(check_recipient(arg))
            continue
        flag, rest = arg[1:2], arg[2:]
        if flag in _WITH_VALUE:
            rest, i = _take_value(flag, rest, items, i)
            if flag in "fr":
                inv.sender, inv.sender_flag = check_sender(rest, f"-{flag}"), f"-{flag}"
            elif flag == "F":
                inv.full_name = fold_line_breaks(rest)
        elif flag == "t":
            inv.from_headers = True
        elif flag == "i":
            inv.ignore_dots = True
        elif flag == "o":
            _option(inv, rest)
        elif flag == "q":
            # -q runs the queue; -qR/-qS/-q15m variants are treated alike (the queue is
            # small and one Send/Receive runs all of it).
            inv.mode = "q"
        elif flag == "b":
            if rest not in ("m", "p"):
                raise UsageError(
                    f"-b{rest} is not supported; use -bm (queue a message), -bp (list the "
                    "queue) or -q (run the queue)"
                )
            inv.mode = rest
        # Anything else (-v, -m, -n, -U, -G, -Am...) changes nothing for a queue.
    return inv


def _option(inv: Invocation, rest: str) -> None:
    """``-oX``: -oi is -i; -odb/-odi/-odq choose the delivery mode (also as -odbackground
    and the like); every other option (-oem, -oQ...) is accepted and ignored."""
    if rest == "i":
        inv.ignore_dots = True
    elif rest.startswith("d") and rest[1:2] in _OD:
        inv.delivery = _OD[rest[1:2]]
