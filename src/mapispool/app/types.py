"""The shape of an operation: ``await operation(session, params, emit)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..session import AsyncSession

#: Receives the events an operation sends before its result (a flush's progress).
Emit = Callable[[dict[str, Any]], None]
#: An operation's parameters, JSON-friendly (they may have crossed a socket).
Params = Mapping[str, Any]
#: An operation: it runs against a session and returns a JSON-friendly value.
Operation = Callable[[AsyncSession, Params, Emit], Awaitable[Any]]
