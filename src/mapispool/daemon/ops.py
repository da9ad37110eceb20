"""The operations behind every ``mapispool`` command, written once against an
``AsyncSession`` and returning JSON-friendly values, so that the daemon (for clients on its
control socket) and the CLI (in-process, when no daemon runs) give the same answers."""

from __future__ import annotations

import base64
import contextlib
import email.utils
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import Any

from ..mapi import (
    FLUSH_ASYNC_OK,
    FLUSH_DOWNLOAD,
    FLUSH_FORCE,
    FLUSH_NO_UI,
    FLUSH_UPLOAD,
    MAPI_BCC,
    MAPI_CC,
    MAPI_E_INVALID_PARAMETER,
    MAPI_E_NOT_FOUND,
    MAPI_TO,
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_PROVIDER_DISPLAY,
    PR_RESOURCE_METHODS,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    MapiError,
    StatusCode,
)
from ..session import AsyncFlushHandle, AsyncSession
from ..spi import Recipient
from ..spooler.flush import FlushProgress, FlushResult
from ..spooler.status import describe_status_code
from ..store import QueueEntry, StoredMessage
from ..store.codec import dump_props
from ..submission import parse_recipient

Emit = Callable[[dict[str, Any]], None]
Params = Mapping[str, Any]
Operation = Callable[[AsyncSession, Params, Emit], Awaitable[Any]]

#: Operations that need the spooler running (transports logged on); the rest only need
#: the store, so without a daemon the CLI runs them without logging any transport on.
NEEDS_SPOOLER = frozenset({"flush", "status", "status_rows"})

QUEUE_ACTIONS = ("cancel", "hold", "release", "retry", "purge")


def status_bits(code: int) -> list[str]:
    """The names of the ``PR_STATUS_CODE`` bits set in ``code``."""
    return [str(member.name) for member in StatusCode if member.value and code & member.value]


def row_dict(row: Mapping[int, Any]) -> dict[str, Any]:
    """A status row as JSON: the columns a person or script needs, bits spelled out."""
    code = int(row.get(PR_STATUS_CODE, 0))
    return {
        "name": str(row.get(PR_DISPLAY_NAME, "")),
        "provider": str(row.get(PR_PROVIDER_DISPLAY, "")),
        "entry_id": bytes(row.get(PR_ENTRYID, b"")).hex(),
        "status_code": code,
        "status_bits": status_bits(code),
        "status_string": str(row.get(PR_STATUS_STRING) or describe_status_code(code)),
        "resource_methods": int(row.get(PR_RESOURCE_METHODS, 0)),
    }


def result_dict(result: FlushResult) -> dict[str, Any]:
    """A ``FlushResult`` as JSON, transports in transport order."""
    return {
        "flags": result.flags,
        "ok": result.ok,
        "interrupted": result.interrupted,
        "started": result.started,
        "finished": result.finished,
        "transports": [t.as_dict() for t in result.transports.values()],
    }


def progress_dict(event: FlushProgress) -> dict[str, Any]:
    return {
        "event": "progress",
        "transport": event.transport,
        "phase": event.phase,
        "done": event.done,
        "total": event.total,
        "bytes_done": event.bytes_done,
        "bytes_total": event.bytes_total,
    }


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


async def flush(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Send/Receive: ``{"async_started": true}`` with ``async``, else the result when done.
    With ``flags`` (MAPI's, from the Python API) see ``flush_with_flags``."""
    if "flags" in params:
        return await flush_with_flags(session, params, emit)
    flags = flush_flags(params)
    name = params.get("transport")
    target = await transport_entry_id(session, str(name)) if name else None

    def progress(event: FlushProgress) -> None:
        emit(progress_dict(event))

    status = session.spooler_status()
    if params.get("async"):
        outcome = await status.flush_queues(flags | FLUSH_ASYNC_OK, target, progress)
        assert isinstance(outcome, AsyncFlushHandle)
        if params.get("keep_waiting"):
            # In-process: the spooler ends with this command, so it waits all the same.
            return result_dict(await outcome.wait())
        return {"async_started": True}
    outcome = await status.flush_queues(flags, target, progress, wait=bool(params.get("wait")))
    assert isinstance(outcome, FlushResult)
    return result_dict(outcome)


async def flush_with_flags(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """FlushQueues for a Python API client: ``flags`` and ``target`` (a row's entry id in
    hex) as MAPI has them. With ``FLUSH_ASYNC_OK`` a ``started`` event follows the start
    (or the error, such as ``MAPI_E_BUSY``, comes at once), then the result when done."""
    flags = int(params["flags"])
    target = bytes.fromhex(str(params["target"])) if params.get("target") else None

    def progress(event: FlushProgress) -> None:
        emit(progress_dict(event))

    status = session.spooler_status()
    if flags & FLUSH_ASYNC_OK:
        handle = await status.flush_queues(flags, target, progress)
        assert isinstance(handle, AsyncFlushHandle)
        emit({"event": "started"})
        return result_dict(await handle.wait())
    outcome = await status.flush_queues(flags, target, progress, wait=bool(params.get("wait")))
    assert isinstance(outcome, FlushResult)
    return result_dict(outcome)


async def status(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """The status table; with ``validate`` each transport first checks its state
    (ValidateState: an SMTP transport connects and authenticates), as the in-process
    status does, whose transports have not sent anything yet (issue #13)."""
    if params.get("validate"):
        with contextlib.suppress(MapiError):  # the rows say what went wrong
            await session.spooler_status().validate_state()
    return [row_dict(row) for row in await session.status_table()]


def _parse_recipients(params: Params) -> list[str | Recipient] | None:
    """``recipients`` (To), ``cc`` and ``bcc`` lists of addresses; None when all are absent
    (then the message's headers say who gets it)."""
    typed: list[str | Recipient] = []
    for key, rtype in (("recipients", MAPI_TO), ("cc", MAPI_CC), ("bcc", MAPI_BCC)):
        for spec in params.get(key) or ():
            typed.append(parse_recipient(str(spec), rtype))
    if not typed and params.get("recipients") is None:
        return None
    return typed


async def submit(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """Queue a message; returns the entry id in hex. ``content`` is the message's bytes
    (in process) or base64 text (over the socket, for clients older than ``submitted``)."""
    raw = params["content"]
    content = bytes(raw) if isinstance(raw, bytes | bytearray) else base64.b64decode(str(raw))
    send_at = params.get("send_at")
    entry_id = await session.submit(
        content,
        recipients=_parse_recipients(params),
        deferred_send_time=datetime.fromtimestamp(float(send_at), UTC) if send_at else None,
        sender=params.get("sender"),
    )
    return entry_id.hex()


async def submitted(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """A client queued ``entry_id`` in the store itself: the spooler looks at the queue
    now rather than at its next wake-up."""
    session.spooler.queue_changed()
    return {"entry_id": str(params.get("entry_id") or "")}


async def status_rows(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """The status table with every property, each row as the store's props JSON (the
    Python API's client mode rebuilds the rows from it)."""
    return [dump_props(row) for row in await session.status_table()]


def _all_entries(session: AsyncSession) -> list[QueueEntry]:
    return session.store.outgoing_queue(include_finished=True)


def resolve_entry(session: AsyncSession, text: str) -> bytes:
    """The entry id a person typed: the full hex id or a unique prefix of it."""
    wanted = text.strip().lower()
    if not wanted or any(ch not in "0123456789abcdef" for ch in wanted):
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"{text!r} is not an entry id in hex")
    matches = [e.entry_id for e in _all_entries(session) if e.entry_id.hex().startswith(wanted)]
    if not matches:
        raise MapiError(MAPI_E_NOT_FOUND, f"no queued message has an entry id starting {wanted}")
    if len(matches) > 1:
        raise MapiError(
            MAPI_E_INVALID_PARAMETER, f"{wanted} matches {len(matches)} messages; give more digits"
        )
    return matches[0]


async def queue_list(session: AsyncSession, params: Params, emit: Emit) -> Any:
    entries = _all_entries(session) if params.get("all") else await session.outgoing_queue()
    return [e.as_dict() for e in entries]


async def queue_show(session: AsyncSession, params: Params, emit: Emit) -> Any:
    entry_id = resolve_entry(session, str(params["entry_id"]))
    info = (await session.queue_entry(entry_id)).as_dict()
    info["events"] = [
        {"at": e.at, "kind": e.kind, "transport": e.transport, "detail": e.detail}
        for e in session.store.events(entry_id)
    ]
    return info


async def queue_action(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """cancel, hold, release, retry or purge one queued message."""
    action = str(params["action"])
    if action not in QUEUE_ACTIONS:
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"unknown queue action {action!r}")
    entry_id = resolve_entry(session, str(params["entry_id"]))
    method: Callable[[bytes], Awaitable[None]] = getattr(session, action)
    await method(entry_id)
    return {"entry_id": entry_id.hex(), "action": action}


def message_dict(message: StoredMessage, *, content: bool = False) -> dict[str, Any]:
    headers = BytesHeaderParser().parsebytes(message.content)
    date = headers.get("Date")
    info: dict[str, Any] = {
        "entry_id": message.entry_id.hex(),
        "folder": message.folder,
        "message_class": message.message_class,
        "subject": message.subject,
        "from": str(headers.get("From", "")),
        "to": str(headers.get("To", "")),
        "date": str(date) if date else None,
        "size": len(message.content),
        "recipients": [r.address for r in message.recipients],
    }
    if date:
        parsed = email.utils.parsedate_to_datetime(str(date))
        info["timestamp"] = parsed.timestamp() if parsed else None
    if content:
        info["content"] = message.content.decode("utf-8", "replace")
        # The exact bytes (the text above replaces what is not UTF-8): folder show writes
        # these (issue #13).
        info["content_base64"] = base64.b64encode(message.content).decode("ascii")
    return info


async def folder_list(session: AsyncSession, params: Params, emit: Emit) -> Any:
    store = session.store
    return [
        {
            "name": name,
            "entry_id": store.folder_entry_id(name).hex(),
            "count": store.message_count(name),
        }
        for name in store.folder_names()
    ]


async def folder_show(session: AsyncSession, params: Params, emit: Emit) -> Any:
    """The messages of one folder, or with ``entry_id`` one message with its content."""
    folder = session.folder(str(params["folder"]))
    messages = await folder.messages()
    wanted = str(params.get("entry_id") or "").lower()
    if not wanted:
        return [message_dict(m) for m in messages]
    matches = [m for m in messages if m.entry_id.hex().startswith(wanted)]
    if len(matches) != 1:
        raise MapiError(
            MAPI_E_NOT_FOUND,
            f"{len(matches)} messages in {folder.name} have an entry id starting {wanted}",
        )
    return message_dict(matches[0], content=True)


async def ping(session: AsyncSession, params: Params, emit: Emit) -> Any:
    return {"pong": True, "store": str(session.store.path)}


OPERATIONS: dict[str, Operation] = {
    "flush": flush,
    "status": status,
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


async def dispatch(session: AsyncSession, op: str, params: Params, emit: Emit) -> Any:
    """Run the operation called ``op``; an unknown name is ``MAPI_E_INVALID_PARAMETER``."""
    operation = OPERATIONS.get(op)
    if operation is None:
        raise MapiError(MAPI_E_INVALID_PARAMETER, f"unknown operation {op!r}")
    return await operation(session, params, emit)
