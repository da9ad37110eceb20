"""The JSON forms of what the operations return: status rows, flush results and their
progress events, stored messages. The daemon's socket, the CLI's ``--json`` and the web
API all show these shapes; ``flush_result_from_dict`` and ``progress_from_dict`` read
them back (the client of ``mapispool serve`` rebuilds the Python objects from them)."""

from __future__ import annotations

import base64
import email.utils
from collections.abc import Mapping
from email.parser import BytesHeaderParser
from typing import Any

from ..mapi import (
    PR_DISPLAY_NAME,
    PR_ENTRYID,
    PR_PROVIDER_DISPLAY,
    PR_RESOURCE_METHODS,
    PR_STATUS_CODE,
    PR_STATUS_STRING,
    StatusCode,
)
from ..spooler.flush import FlushProgress, FlushResult, TransportFlushResult
from ..spooler.status import describe_status_code
from ..store import StoredMessage


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


def flush_result_from_dict(data: Mapping[str, Any]) -> FlushResult:
    """The ``FlushResult`` that ``result_dict`` wrote."""
    transports = {
        str(t["transport"]): TransportFlushResult(**t) for t in data.get("transports") or []
    }
    return FlushResult(
        flags=int(data["flags"]),
        transports=transports,
        interrupted=bool(data.get("interrupted")),
        started=float(data["started"]),
        finished=data.get("finished"),
    )


def progress_dict(event: FlushProgress) -> dict[str, Any]:
    """A flush's progress event as JSON (``"event": "progress"``)."""
    return {
        "event": "progress",
        "transport": event.transport,
        "phase": event.phase,
        "done": event.done,
        "total": event.total,
        "bytes_done": event.bytes_done,
        "bytes_total": event.bytes_total,
    }


def progress_from_dict(event: Mapping[str, Any]) -> FlushProgress:
    """The ``FlushProgress`` that ``progress_dict`` wrote."""
    return FlushProgress(
        transport=str(event["transport"]),
        phase=str(event["phase"]),
        done=int(event["done"]),
        total=event.get("total"),
        bytes_done=int(event.get("bytes_done") or 0),
        bytes_total=event.get("bytes_total"),
    )


def message_dict(message: StoredMessage, *, content: bool = False) -> dict[str, Any]:
    """A stored message as JSON: its headers a person looks at, with ``content`` its
    text too (decoded as UTF-8, undecodable bytes replaced)."""
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
