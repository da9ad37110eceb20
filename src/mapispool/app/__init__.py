"""The application layer: the operations every front end shares (DESIGN §2).

Each operation is written once against an ``AsyncSession`` and returns JSON-friendly
values, so the daemon's control socket (``daemon.server``), the command line in process
(``LocalBackend``, when no daemon runs) and the web API give the same answers.

- ``operations``: the table of operations by name and ``dispatch``;
- ``flush``, ``status``, ``submit``, ``queue``, ``folders``: the operations;
- ``shapes``: the JSON forms of rows, flush results, progress and messages;
- ``local``: ``LocalBackend``, the operations run in this process for one call.

This package imports the session and what is below it, never ``daemon``, ``cli`` or
``web``.
"""

from __future__ import annotations

from .local import Backend, LocalBackend, Progress
from .operations import NEEDS_SPOOLER, OPERATIONS, dispatch
from .queue import QUEUE_ACTIONS
from .types import Emit, Operation, Params

__all__ = [
    "NEEDS_SPOOLER",
    "OPERATIONS",
    "QUEUE_ACTIONS",
    "Backend",
    "Emit",
    "LocalBackend",
    "Operation",
    "Params",
    "Progress",
    "dispatch",
]
