"""Structured log lines for the daemon: one event per line on stderr, as ``key=value``
pairs or JSON objects, so that journald, a log shipper or ``grep`` can read them.

A record that carries an exception keeps its traceback in one field (``traceback``, its
line breaks escaped like any other value), never as raw lines after the event. Records
of other libraries (asyncio's "Task exception was never retrieved", for one) come the
same way once ``install`` ran, instead of Python's plain multi-line fallback."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any, TextIO


def _kv_value(value: Any) -> str:
    text = str(value)
    if text and not any(ch in text for ch in ' "=\n\t'):
        return text
    return json.dumps(text)


class EventLog:
    """Writes ``event=NAME key=value ...`` (or the same as JSON) lines."""

    def __init__(self, fmt: str = "kv", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        record: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "level": level,
            "event": event,
        }
        record.update({k: v for k, v in fields.items() if v is not None})
        if self.fmt == "json":
            line = json.dumps(record, default=str)
        else:
            line = " ".join(f"{key}={_kv_value(value)}" for key, value in record.items())
        self.stream.write(line + "\n")
        self.stream.flush()


class EventLogHandler(logging.Handler):
    """Routes the library's ``logging`` records through an ``EventLog``."""

    def __init__(self, events: EventLog) -> None:
        super().__init__()
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            error = record.exc_info[1] if record.exc_info else None
            if error is not None:
                message += f": {error!r}"
            self.events(
                "log",
                level=record.levelname.lower(),
                logger=record.name,
                message=message,
                traceback="".join(traceback.format_exception(error)).rstrip()
                if error is not None
                else None,
            )
        except Exception:  # logging must never take the daemon down
            self.handleError(record)


def install(events: EventLog, verbose: bool) -> None:
    """Send the ``mapispool`` loggers' records to ``events`` (INFO, or DEBUG if verbose),
    and every other library's warnings and errors too (the root logger)."""
    logger = logging.getLogger("mapispool")
    logger.handlers[:] = [EventLogHandler(events)]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    others = EventLogHandler(events)
    others.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [others]
    root.setLevel(others.level)
