"""Routing (spec §3.3 AddressTypes, §4.3 step 5): which transport gets a recipient.

Pure functions over the transport order; the engine feeds them the logged-on transports'
address types and the transports that already declined the message (MAPI_E_NOT_ME).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

#: A transport registration: its name and the address types it accepts ("*" = any).
Registration = tuple[str, Sequence[str]]


def accepts(types: Sequence[str], addrtype: str) -> bool:
    """True when ``types`` (a transport's address types) covers ``addrtype`` (exact match)."""
    return "*" in types or addrtype in types


def route(
    addrtype: str, registrations: Sequence[Registration], declined: Collection[str] = ()
) -> str | None:
    """The first transport in transport order that accepts ``addrtype`` and has not
    declined the message, or None when none is left."""
    for name, types in registrations:
        if name not in declined and accepts(types, addrtype):
            return name
    return None
