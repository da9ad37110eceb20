"""Picking the outbound account by envelope sender, as msmtp's ``--from`` matching and
Postfix's ``sender_dependent_relayhost_maps`` do.

A transport section may list ``senders = ["me@example.org", "*@example.com"]``. For a
message, the transports are tried in this order (each group in transport order):

1. those whose ``senders`` match the envelope sender;
2. those without a ``senders`` list (they take any sender);
3. the rest, so that a message is never left without a transport only because its
   sender matched no list.

With no ``senders`` anywhere in the profile, routing is plain transport order and costs
nothing. Matching ignores case; ``*@example.com`` matches exactly that domain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..mapi import PR_SENDER_EMAIL_ADDRESS
from .routing import Registration

#: Transport name -> its ``senders`` patterns, lower-cased.
Patterns = Mapping[str, tuple[str, ...]]


def sender_matches(patterns: Sequence[str], sender: str) -> bool:
    """True when ``sender`` is one of ``patterns`` (addresses or ``*@domain``)."""
    address = sender.strip().lower()
    if "@" not in address:
        return False
    domain = address.rpartition("@")[2]
    return any(p == address or (p.startswith("*@") and p[2:] == domain) for p in patterns)


def by_sender(
    registrations: Sequence[Registration], sender: str | None, patterns: Patterns
) -> list[Registration]:
    """``registrations`` reordered for a message from ``sender`` (see the module doc)."""
    if not patterns or not sender:
        return list(registrations)
    matched = [
        r for r in registrations if r[0] in patterns and sender_matches(patterns[r[0]], sender)
    ]
    open_ = [r for r in registrations if r[0] not in patterns]
    rest = [r for r in registrations if r not in matched and r not in open_]
    return matched + open_ + rest


def profile_patterns(transports: Sequence[Any]) -> dict[str, tuple[str, ...]]:
    """The ``senders`` of each transport section (``profile.transports``) that has one."""
    found: dict[str, tuple[str, ...]] = {}
    for config in transports:
        senders = config.settings.get("senders")
        if senders:
            found[config.name] = tuple(str(s).strip().lower() for s in senders)
    return found


class SenderRoutes:
    """Sender-aware routing for the queue: remembers each message's envelope sender (it
    never changes after submit), loaded only when some transport has ``senders``."""

    def __init__(
        self, transports: Sequence[Any], load_props: Callable[[bytes], Mapping[int, Any]]
    ) -> None:
        self.patterns = profile_patterns(transports)
        self._load_props = load_props
        self._senders: dict[bytes, str | None] = {}

    def for_message(
        self, registrations: Sequence[Registration], entry_id: bytes
    ) -> Sequence[Registration]:
        """The registrations in the order that applies to message ``entry_id``."""
        if not self.patterns:
            return registrations
        if entry_id not in self._senders:
            if len(self._senders) > 10_000:
                self._senders.clear()  # bounded: a cache, not a record
            sender = self._load_props(entry_id).get(PR_SENDER_EMAIL_ADDRESS)
            self._senders[entry_id] = str(sender) if sender else None
        return by_sender(registrations, self._senders[entry_id], self.patterns)
