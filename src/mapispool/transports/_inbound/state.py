"""Durable transport state kept as JSON text through ``Support.get_state``/``set_state``.

Values are written as one JSON string, so that any store that can keep a string keeps
them (the SPI promises JSON values, but a string is the smallest common ground), and read
back whether the store returns that string or an already-decoded value.
"""

from __future__ import annotations

import json
from typing import Any

from ...spi import Support


def load_state(support: Support, key: str) -> Any:
    """The value saved under ``key``, or None (also for anything unreadable)."""
    value = support.get_state(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def save_state(support: Support, key: str, value: Any) -> None:
    """Save ``value`` (JSON-serialisable) under ``key``."""
    support.set_state(key, json.dumps(value, separators=(",", ":"), sort_keys=True))
