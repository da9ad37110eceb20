"""Several statements in one round trip: a ``Script`` binds each statement's parameters
on the client (psycopg's ``ClientCursor``) and sends them all as one simple query.

Why not psycopg's pipeline mode, which also sends many statements in one round trip:
its asynchronous form costs the worker about 0.3 ms of CPU per statement (a flush and
a poll for every one), so a four-statement transaction cost 1.2 ms of CPU against
0.24 ms as one simple query (bench/PG_WORKERS.md, "Scripts"). On a worker sending a few
hundred messages a second that difference was most of the gap to the SQLite store.

A simple query is planned by the server each time it runs; the statements of every
outcome (``PREPARED``) are therefore prepared once per connection, and a script calls
them with ``EXECUTE``, which the server does not plan again (about 0.2 ms of server CPU
saved per statement of the outcome's size).

A statement carrying a large binary parameter (a message's content over ``LARGE``) is the
exception: it goes alone, with its parameters bound by the server in binary, so that the
content is never turned into a hex literal (twice its size, and copied).

The server runs the statements in order and stops at the first that fails; the script
raises that error, and the statements before it stay part of the open transaction (a
script that starts with BEGIN leaves it aborted: the caller rolls back). Parameters are
bound by psycopg's own quoting with the connection's adapters, so the store's storable
text (``_text``) holds here as for any other query.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg

from ._plumbing import Conn
from ._sql import q

Rows = list[tuple[Any, ...]]

#: The queries a script sends as EXECUTE of a prepared statement: those of every
#: submission, delivery, claim, hand-over mark and outcome.
PREPARED = frozenset(
    {
        "claim_take",
        "recipients_of",
        "file_message",
        "claim_dedupe_keys",
        "mark_handoff",
        "lock_entries",
        "guard_claims",
        "save_recipients",
        "set_recipient_outcomes",
        "change_state_logged",
        "insert_event",
    }
)

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s")

#: The statements prepared on each connection (a new connection prepares again).
_READY: weakref.WeakKeyDictionary[Conn, set[str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Prepared:
    """A named query as a server-side prepared statement."""

    name: str
    prepare: str  # PREPARE ... AS the query with $1..$n
    keys: tuple[str | int, ...]  # the parameter behind each $n: a name or a position
    call: str  # EXECUTE name(%s, ...), to bind on the client

    def arguments(self, params: Any) -> tuple[Any, ...]:
        if isinstance(params, Mapping):
            return tuple(params[key] for key in self.keys)
        values: Sequence[Any] = params
        return tuple(values[key] for key in self.keys if isinstance(key, int))


@cache
def prepared(name: str) -> Prepared:
    """The prepared form of the query called ``name`` (its ``%(x)s`` or ``%s`` numbered in
    order of first use)."""
    keys: list[str | int] = []
    position = 0

    def number(match: re.Match[str]) -> str:
        nonlocal position
        key: str | int
        if match.group(1) is None:
            key, position = position, position + 1
        else:
            key = match.group(1)
        if key not in keys:
            keys.append(key)
        return f"${keys.index(key) + 1}"

    body = _PLACEHOLDER.sub(number, q(name))
    statement = f"mapispool_{name}"
    marks = ", ".join(["%s"] * len(keys))
    return Prepared(
        statement, f"PREPARE {statement} AS {body}", tuple(keys), f"EXECUTE {statement}({marks})"
    )


#: A statement with a binary parameter longer than this (bytes) goes on its own with
#: the parameters bound by the server: bound on the client, a 50 MB message became a
#: 100 MB hex literal and several copies of it (a peak of 7 times the message).
LARGE = 64 * 1024


@dataclass(frozen=True)
class _Part:
    query: str  # as sent in the script (EXECUTE for a prepared one)
    params: Any
    plain: tuple[str, Any]  # the query text and parameters for server-side binding
    large: bool  # a binary parameter over LARGE: sent alone, bound by the server


class Script:
    """Statements gathered for one round trip; ``add`` and ``call`` return the index of
    the result to read after ``run``."""

    def __init__(self) -> None:
        self._parts: list[_Part] = []
        self._uses: set[str] = set()

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, query: str, params: Any = None) -> int:
        """A statement given as text."""
        self._parts.append(_Part(query, params, (query, params), _large(params)))
        return len(self._parts) - 1

    def call(self, name: str, params: Any = None) -> int:
        """The named query ``name`` (``queries.sql``), as EXECUTE when it is prepared (a
        large one is not: it goes by its text, bound by the server)."""
        if name not in PREPARED or _large(params):
            return self.add(q(name), params)
        statement = prepared(name)
        self._uses.add(name)
        arguments = statement.arguments(params)
        self._parts.append(_Part(statement.call, arguments, (q(name), params), False))
        return len(self._parts) - 1

    def extend(self, other: Script) -> None:
        """Append ``other``'s statements (indexes into ``other`` do not carry over)."""
        self._parts.extend(other._parts)
        self._uses |= other._uses

    async def run(self, conn: Conn) -> list[Rows | None]:
        """Send the statements, all at once except one with a ``LARGE`` binary parameter,
        which goes alone with server-side binding between the ones before and after it;
        the rows each returned (None for a statement that returns none), in order."""
        await _prepare(conn, self._uses)
        results: list[Rows | None] = []
        batch: list[_Part] = []
        for part in self._parts:
            if part.large:
                results += await _simple(conn, batch)
                batch = []
                cur = await conn.execute(*part.plain)
                results.append(await cur.fetchall() if cur.description is not None else None)
            else:
                batch.append(part)
        return results + await _simple(conn, batch)


async def _simple(conn: Conn, parts: Sequence[_Part]) -> list[Rows | None]:
    """``parts`` bound on the client and sent as one simple query; each one's rows."""
    if not parts:
        return []
    cur = psycopg.AsyncClientCursor(conn)
    try:
        text = ";\n".join(
            part.query if part.params is None else cur.mogrify(part.query, part.params)
            for part in parts
        )
        await cur.execute(text)
        results: list[Rows | None] = []
        while True:
            results.append(await cur.fetchall() if cur.description is not None else None)
            if not cur.nextset():
                break
        return results
    finally:
        await cur.close()


def _large(params: Any) -> bool:
    values = params.values() if isinstance(params, Mapping) else (params or ())
    return any(isinstance(v, bytes | bytearray | memoryview) and len(v) > LARGE for v in values)


def array_literal(values: Iterable[int | bool]) -> str:
    """An array of integers or booleans as the text of a PostgreSQL array literal, which
    the prepared statement's parameter type reads (``{1,2}``, ``{t,f}``): psycopg's list
    dumping cost about 20 us a list on the client, several lists a message. Only numbers
    and booleans, whose text needs no quoting."""
    return (
        "{"
        + ",".join(("t" if v else "f") if isinstance(v, bool) else str(int(v)) for v in values)
        + "}"
    )


async def _prepare(conn: Conn, names: set[str]) -> None:
    """Prepare on ``conn`` those of ``names`` it has not prepared yet, in one round trip.
    PREPARE is not undone by a rollback, so a statement prepared inside a transaction
    that later fails stays prepared."""
    ready = _READY.setdefault(conn, set())
    missing = sorted(names - ready)
    if missing:
        await conn.execute(";\n".join(prepared(name).prepare for name in missing).encode())
        ready.update(missing)
