"""Text that can always be written: the store's guard against strings SQLite refuses.

Text reaches the store from servers, files and people: a reply decoded with
``surrogateescape``, a file name that is not UTF-8, a header with a NUL. A lone surrogate
cannot be encoded as UTF-8, so ``sqlite3`` raises ``UnicodeEncodeError`` and the whole
write fails; a NUL is stored but cuts the value short for SQLite's own text functions.
A failed write of an error text once turned a refused message into a sent one (issue
#10), so every text the store writes goes through ``storable`` first, and nothing a
server or a file says can make a store write fail.

The replacement is a visible backslash escape, not U+FFFD: ``\\xe4`` for a byte that
``surrogateescape`` carried (the byte it stood for), ``\\udXXX`` for any other lone
surrogate, ``\\x00`` for NUL. It is deterministic and keeps distinct inputs distinct, so
a dedupe key or a name made storable still matches itself and never another one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code == 0:
        return "\\x00"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # the byte surrogateescape stood for
    return f"\\u{code:04x}"


def storable(text: str) -> str:
    """``text`` with every NUL and lone surrogate replaced by a backslash escape; the
    same object when there is none (the common case costs one scan)."""
    if text.isascii():
        return text if "\x00" not in text else text.replace("\x00", "\\x00")
    return _UNSTORABLE.sub(_escape, text)


def storable_params(params: Any) -> Any:
    """SQL parameters (a sequence or a mapping) with every ``str`` made ``storable``;
    the same object when every text already is (the common case: no copy)."""
    if type(params) is dict:  # the store's own statements: a quick scan, no ABC checks
        for value in params.values():
            if type(value) is str and not (value.isascii() and "\x00" not in value):
                return {key: _param(value) for key, value in params.items()}
            if isinstance(value, str) and type(value) is not str:  # a str subclass
                return {key: _param(value) for key, value in params.items()}
        return params
    if isinstance(params, Mapping):
        return {key: _param(value) for key, value in params.items()}
    if isinstance(params, Sequence) and not isinstance(params, str | bytes):
        return tuple(_param(value) for value in params)
    return params


def _param(value: Any) -> Any:
    return storable(value) if isinstance(value, str) else value


class StorableTextConnection(sqlite3.Connection):
    """An ``sqlite3.Connection`` whose ``execute`` and ``executemany`` make every text
    parameter ``storable``: one place that guards every statement the store runs,
    whichever column the text is for (report texts, last errors, event details, status
    rows, names, keys). Pass it as ``factory`` to ``sqlite3.connect``."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return super().execute(sql, storable_params(parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return super().executemany(sql, (storable_params(p) for p in parameters))
