"""Send/Receive as an operation: FlushQueues on the session's spooler status object, from
a command's options (``flush``) or from MAPI's flags (``flush_with_flags``)."""

from __future__ import annotations

from typing import Any

from ..mapi import (
    FLUSH_ASYNC_OK,
    FLUSH_DOWNLOAD,
    FLUSH_FORCE,
    FLUSH_NO_UI,
    FLUSH_UPLOAD,
    MAPI_E_NOT_FOUND,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    MapiError,
)
from ..session import AsyncFlushHandle, AsyncSession
from ..spooler.flush import FlushProgress, FlushResult, ProgressCallback
from .shapes import progress_dict, result_dict
from .types import Emit, Params


def flush_flags(params: Params) -> int:
    """FlushQueues flags from the command's options (both directions by default)."""
    upload, download = bool(params.get("upload")), bool(params.get("download"))
    flags = 0
    if upload or not download:
        flags |= FLUSH_UPLOAD
    if download or not upload:
        flags |= FLUSH_DOWNLOAD
    if params.get("force"):
        flags |= FLUSH_FORCE
    if params.get("no_ui"):
        flags |= FLUSH_NO_UI
    return flags


async def transport_entry_id(session: AsyncSession, name: str) -> bytes:
    """The ``PR_ENTRYID`` of the transport row called ``name`` (the targeted flush's key)."""
    rows = (await session.status_table())[1:]
    for row in rows:
        if row.get(PR_DISPLAY_NAME) == name:
            return bytes(row[PR_ENTRYID])
    known = ", ".join(str(r.get(PR_DISPLAY_NAME)) for r in rows) or "none"
    raise MapiError(MAPI_E_NOT_FOUND, f"no transport called {name!r}; the transports are: {known}")


def _progress(emit: Emit) -> ProgressCallback:
    """Progress events as JSON, to ``emit``."""

    def progress(event: FlushProgress) -> None:
        emit(progress_dict(event))

    return progress


async def flush(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Send/Receive: ``{"async_started": true}`` with ``async``, else the result when done.
    With ``flags`` (MAPI's, from the Python API) see ``flush_with_flags``."""
    if "flags" in params:
        return await flush_with_flags(session, params, emit)
    flags = flush_flags(params)
    name = params.get("transport")
    target = await transport_entry_id(session, str(name)) if name else None
    status = session.spooler_status()
    if params.get("async"):
        outcome = await status.flush_queues(flags | FLUSH_ASYNC_OK, target, _progress(emit))
        assert isinstance(outcome, AsyncFlushHandle)
        if params.get("keep_waiting"):
            # In-process: the spooler ends with this command, so it waits all the same.
            return result_dict(await outcome.wait())
        return {"async_started": True}
    wait = bool(params.get("wait"))
    outcome = await status.flush_queues(flags, target, _progress(emit), wait=wait)
    assert isinstance(outcome, FlushResult)
    return result_dict(outcome)


async def flush_with_flags(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """FlushQueues for a Python API client: ``flags`` and ``target`` (a row's entry id in
    hex) as MAPI has them. With ``FLUSH_ASYNC_OK`` a ``started`` event follows the start
    (or the error, such as ``MAPI_E_BUSY``, comes at once), then the result when done."""
    flags = int(params["flags"])
    target = bytes.fromhex(str(params["target"])) if params.get("target") else None
    status = session.spooler_status()
    if flags & FLUSH_ASYNC_OK:
        handle = await status.flush_queues(flags, target, _progress(emit))
        assert isinstance(handle, AsyncFlushHandle)
        emit({"event": "started"})
        return result_dict(await handle.wait())
    wait = bool(params.get("wait"))
    outcome = await status.flush_queues(flags, target, _progress(emit), wait=wait)
    assert isinstance(outcome, FlushResult)
    return result_dict(outcome)
