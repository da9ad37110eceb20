"""Every text parameter the PostgreSQL store sends is made ``storable`` (store/text.py).

PostgreSQL refuses a NUL in text, and psycopg cannot encode a lone surrogate (a server's
reply decoded with ``surrogateescape``) as UTF-8: either would fail the whole write, and a
failed write of an error text once turned a refused recipient into a delivered one (issue
#10). The SQLite store guards every statement with ``StorableTextConnection``; here the
same guard is psycopg's string dumper, swapped in for the store's own connections only
(``STORE_ADAPTERS`` is passed as their ``context``), so one place covers every column.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.adapt import AdaptersMap
from psycopg.types.string import StrBinaryDumper, StrDumperUnknown

from ..text import storable


class StorableTextDumper(StrDumperUnknown):
    """psycopg's default text-format ``str`` dumper, after ``storable``."""

    def dump(self, obj: str) -> Any:
        return super().dump(storable(obj))


class StorableTextBinaryDumper(StrBinaryDumper):
    """psycopg's default binary-format ``str`` dumper, after ``storable``."""

    def dump(self, obj: str) -> Any:
        return super().dump(storable(obj))


#: The adapters of the store's connections: psycopg's, with the storable ``str`` dumpers
#: (binary first, then text, as psycopg registers them, so text stays the default).
STORE_ADAPTERS = AdaptersMap(psycopg.adapters)
STORE_ADAPTERS.register_dumper(str, StorableTextBinaryDumper)
STORE_ADAPTERS.register_dumper(str, StorableTextDumper)
