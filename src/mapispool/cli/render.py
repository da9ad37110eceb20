"""Rich tables for the status table, flush results, the queue and folders. Each takes the
JSON-friendly values of the ``mapispool.app`` operations, whichever process produced
them."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

COUNTERS = ("sent", "received", "deferred", "retried", "failed", "uncertain")


def when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp)))


def status_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The rows as a table; on a store that many workers share, a column names the live
    workers behind each row."""
    workers = any("workers" in row for row in rows)
    table = Table(title="Status table")
    columns = ["Name", "Provider", "Status", "PR_STATUS_CODE", "Bits", "Entry id"]
    for column in columns + (["Workers"] if workers else []):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [
            row["name"],
            row["provider"],
            row["status_string"],
            f"0x{int(row['status_code']):08X}",
            " | ".join(row["status_bits"]) or "-",
            row["entry_id"],
        ]
        if workers:
            cells.append(", ".join(row.get("workers") or []) or "-")
        table.add_row(*cells)
    return table


def flush_summary(result: Mapping[str, Any]) -> Table:
    title = "Send/Receive" + (" (interrupted)" if result.get("interrupted") else "")
    table = Table(title=title)
    table.add_column("Transport")
    for name in COUNTERS:
        table.add_column(name.capitalize(), justify="right")
    table.add_column("Skipped / error", overflow="fold")
    for row in result["transports"]:
        note = row.get("error") or row.get("skipped") or ""
        if not note and row.get("offline"):
            note = f"offline: {row['offline']}"
        table.add_row(row["transport"], *(str(row[name]) for name in COUNTERS), str(note))
    return table


def queue_table(entries: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Outgoing queue")
    for column in ("Entry id", "State", "Submitted", "Next try", "Tries", "Subject", "To"):
        table.add_column(column, overflow="fold")
    table.add_column("Last error", overflow="fold")
    for entry in entries:
        table.add_row(
            entry["entry_id"],
            entry["state"],
            when(entry["submit_time"]),
            when(entry["not_before"]),
            str(entry["attempts"]),
            entry["subject"],
            ", ".join(entry["recipients"]),
            entry["last_error"] or "",
        )
    return table


def folders_table(folders: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Folders")
    for column in ("Folder", "Messages", "Entry id"):
        table.add_column(column)
    for folder in folders:
        table.add_row(folder["name"], str(folder["count"]), folder["entry_id"])
    return table


def messages_table(title: str, messages: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title=title)
    for column in ("Entry id", "Class", "From", "To", "Subject", "Size"):
        table.add_column(column, overflow="fold")
    for message in messages:
        table.add_row(
            message["entry_id"],
            message["message_class"],
            message["from"],
            message["to"] or ", ".join(message["recipients"]),
            message["subject"],
            str(message["size"]),
        )
    return table
