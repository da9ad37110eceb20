"""The status table as operations (``status`` for people and scripts, ``status_rows``
with every property for the Python API's client mode) and ``ping``."""

from __future__ import annotations

import contextlib
from typing import Any

from ..mapi import MapiError
from ..session import AsyncSession
from ..store.codec import dump_props
from .shapes import row_dict
from .types import Emit, Params


async def status(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Every status row as ``row_dict`` JSON: the spooler's first, then the transports.
    With ``validate`` each transport first checks its state (ValidateState: an SMTP
    transport connects and authenticates), as the in-process status does, whose
    transports have not sent anything yet (issue #13)."""
    if params.get("validate"):
        with contextlib.suppress(MapiError):  # the rows say what went wrong
            await session.spooler_status().validate_state()
    return [row_dict(row) for row in await session.status_table()]


async def saved_status(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """``status`` as the store's spooler (in another process) last saved it."""
    return [row_dict(row) for row in await session.saved_status_table()]


async def status_rows(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """The status table with every property, each row as the store's props JSON (the
    Python API's client mode rebuilds the rows from it)."""
    return [dump_props(row) for row in await session.status_table()]


async def ping(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Proof of life: the store the answering session has open."""
    return {"pong": True, "store": session.store.location}
