"""The SQLite store's queries, kept in ``queries.sql`` beside this module and loaded by
name once, at import: the SQL reads as SQL, and the Python code names what it runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.M)


def parse(text: str) -> dict[str, str]:
    """``{name: sql}`` for every ``-- name: <name>`` block of ``text``; the comment lines
    of a block stay out of its SQL. A name given twice is a mistake in the file."""
    found: dict[str, str] = {}
    parts = _NAME.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"queries.sql names {name!r} twice")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        found[name] = "\n".join(lines).strip().rstrip(";")
    return found


class Queries(Mapping[str, str]):
    """The named queries; ``Q.name`` or ``Q["name"]``."""

    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"queries.sql has no query {name!r}") from None

    def __getitem__(self, name: str) -> str:
        return self._queries[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


# Read beside this file rather than through importlib.resources, whose import costs a
# sendmail process more than the file itself (mapispool is installed unpacked).
Q = Queries(parse(Path(__file__).with_name("queries.sql").read_text("utf-8")))
