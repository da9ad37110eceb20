"""The status table as operations (``status`` for people and scripts, ``status_rows``
with every property for the Python API's client mode) and ``ping``."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..mapi import MapiError
from ..session import AsyncSession
from ..store.codec import dump_props
from .shapes import row_dict, status_bits
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
    """``status`` as the store's spooler (in another process) last saved it. On a store
    that many workers share: one view across the live workers, each row naming them
    (``workers``); a dead worker's rows are gone."""
    if not session.store.many_workers:
        return [row_dict(row) for row in await session.saved_status_table()]
    return combined_rows(await session.store.worker_status_rows())


def combined_rows(rows: Sequence[tuple[str, Mapping[int, Any]]]) -> list[dict[str, Any]]:
    """The rows of several workers as one table: a row per name (the spooler's, then each
    transport's, in the first worker's order), its status bits the union of the workers'
    bits, its status strings each once, ``workers`` the workers that saved it."""
    combined: dict[str, dict[str, Any]] = {}
    for worker, props in rows:
        row = row_dict(props)
        seen = combined.get(row["name"])
        if seen is None:
            row["workers"] = [worker] if worker else []
            combined[row["name"]] = row
            continue
        seen["status_code"] |= row["status_code"]
        seen["status_bits"] = status_bits(seen["status_code"])
        if row["status_string"] not in seen["status_string"].split("; "):
            seen["status_string"] += "; " + row["status_string"]
        if worker:
            seen["workers"].append(worker)
    return list(combined.values())


async def status_rows(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """The status table with every property, each row as the store's props JSON (the
    Python API's client mode rebuilds the rows from it)."""
    return [dump_props(row) for row in await session.status_table()]


async def ping(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Proof of life: the store the answering session has open."""
    return {"pong": True, "store": session.store.location}
