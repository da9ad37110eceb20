"""MAPI property values to and from JSON text, for the store's ``props`` columns.

Keys are property tags written in decimal; ``bytes`` and ``datetime`` values are tagged
so that they come back with their type. Strings are made ``storable`` both ways (no lone
surrogate or NUL, see ``text``): JSON would escape a lone surrogate and bring it back
intact, to break whatever encodes it next (an NDR, a terminal, a log line); a MAPI string
property cannot hold a NUL anyway.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..mapi import RecipientType
from .model import Recipient
from .text import storable


def _encode_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {"$d": {storable(str(k)): _encode_value(v) for k, v in value.items()}}
    raise TypeError(f"cannot store a property value of type {type(value).__name__}")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "$b" in value:
            return base64.b64decode(value["$b"])
        if "$t" in value:
            return datetime.fromisoformat(value["$t"])
        if "$d" in value:
            return {storable(k): _decode_value(v) for k, v in value["$d"].items()}
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, str):
        return storable(value)  # a store written before strings were made storable
    return value


def dump_props(props: Mapping[int, Any]) -> str:
    """Serialise a props mapping (tag → value) to JSON text."""
    return json.dumps({str(int(tag)): _encode_value(v) for tag, v in props.items()})


def load_props(text: str) -> dict[int, Any]:
    """The inverse of ``dump_props``."""
    return {int(tag): _decode_value(v) for tag, v in json.loads(text).items()}


def dump_json(value: Any) -> str:
    """JSON text for free-form values (transport state, lists)."""
    return json.dumps(_encode_value(value))


def load_json(text: str) -> Any:
    """The inverse of ``dump_json``."""
    return _decode_value(json.loads(text))


def recipient_from_row(row: Sequence[Any]) -> Recipient:
    """A ``Recipient`` from a stored recipient row of any store: (row id, address, type,
    display name, recipient type, responsibility, props)."""
    row_id, address, addrtype, display_name, rtype, responsible, props = row
    recipient = Recipient(
        address=address,
        addrtype=addrtype,
        recipient_type=RecipientType(rtype),
        display_name=display_name,
        props=load_props(props),
        row_id=row_id,
    )
    recipient.responsibility = bool(responsible)
    return recipient
