"""The table of operations by name, and ``dispatch``, which runs one."""

from __future__ import annotations

from typing import Any

from ..mapi import MAPI_E_INVALID_PARAMETER, MapiError
from ..session import AsyncSession
from .flush import flush
from .folders import folder_list, folder_show
from .queue import queue_action, queue_list, queue_show
from .status import ping, saved_status, status, status_rows
from .submit import submit, submitted
from .types import Emit, Operation, Params

OPERATIONS: dict[str, Operation] = {
    "flush": flush,
    "status": status,
    "saved_status": saved_status,
    "submit": submit,
    "submitted": submitted,
    "status_rows": status_rows,
    "queue_list": queue_list,
    "queue_show": queue_show,
    "queue_action": queue_action,
    "folder_list": folder_list,
    "folder_show": folder_show,
    "ping": ping,
}

#: Operations that need the spooler running (transports logged on); the rest only need
#: the store, so without a daemon the CLI runs them without logging any transport on.
NEEDS_SPOOLER = frozenset({"flush", "status", "status_rows"})


async def dispatch(session: AsyncSession, op: str, params: Params, emit: Emit) -> Any:
    """Run the operation called ``op``; an unknown name is ``MAPI_E_INVALID_PARAMETER``."""
    operation = OPERATIONS.get(op)
    if operation is None:
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"unknown operation {op!r}")
    return await operation(session, params, emit)
