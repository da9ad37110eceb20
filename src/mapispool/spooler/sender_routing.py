"""Picking the outbound account by envelope sender, as msmtp's ``--from`` matching and
Postfix's ``sender_dependent_relayhost_maps`` do.

A transport section may list ``senders = ["me@example.org", "*@example.com"]``. For a
message, the transports are tried in this order (each group in transport order):

1. those whose ``senders`` match the envelope sender;
2. those without a ``senders`` list (they take any sender);
3. the rest, so that a message is never left without a transport only because its
   sender matched no list.

The rule itself is ``store.order_by_sender``: the store applies it when it claims work
for a transport (``Route.senders``), and the runner applies it again to the claimed
message to pick the recipients it offers. With no ``senders`` anywhere in the profile,
routing is plain transport order and costs nothing. Matching ignores case;
``*@example.com`` matches exactly that domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..store import TransportList, order_by_sender
from .routing import Registration


def profile_patterns(transports: Sequence[Any]) -> TransportList:
    """The ``senders`` of each transport section (``profile.transports``) that has one,
    lower-cased, in transport order (``Route.senders``)."""
    found = []
    for config in transports:
        senders = config.settings.get("senders")
        if senders:
            found.append((config.name, tuple(str(s).strip().lower() for s in senders)))
    return tuple(found)


def by_sender(
    registrations: Sequence[Registration], sender: str | None, patterns: TransportList
) -> list[Registration]:
    """``registrations`` reordered for a message from ``sender`` (see the module doc)."""
    if not patterns or not sender:
        return list(registrations)
    order = [(name, tuple(types)) for name, types in registrations]
    return list(order_by_sender(order, sender, patterns))
