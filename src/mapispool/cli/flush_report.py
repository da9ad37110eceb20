"""What a Send/Receive's result leaves unsaid in its counters, as lines for a person:
each transport's error, skip reason or offline reason, and the messages that wait for a
retry (which a plain ``flush`` does not send before their time: issue #13)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any


def problems(result: Mapping[str, Any]) -> Iterator[str]:
    """One line per transport that failed, was skipped or ended offline."""
    for row in result.get("transports") or ():
        name = row.get("transport")
        if row.get("error"):
            yield f"{name}: {row['error']}"
        elif row.get("skipped"):
            yield f"{name}: skipped: {row['skipped']}"
        elif row.get("offline"):
            yield f"{name}: offline: {row['offline']}"


def waiting_for_retry(
    entries: Sequence[Mapping[str, Any]], now: float | None = None
) -> dict[str, Any] | None:
    """``{"count": N, "until": T}`` for the queued messages (``queue_list``'s entries)
    that wait for a retry later than ``now``, T the first of those times; None if none."""
    now = time.time() if now is None else now
    times = [
        float(e["not_before"])
        for e in entries
        if e.get("state") == "retry" and e.get("not_before") and float(e["not_before"]) > now
    ]
    if not times:
        return None
    return {"count": len(times), "until": min(times)}


def waiting_line(waiting: Mapping[str, Any]) -> str:
    """ "N messages wait for retry until HH:MM; --force sends now"."""
    count = int(waiting["count"])
    noun = "message waits" if count == 1 else "messages wait"
    until = time.strftime("%H:%M", time.localtime(float(waiting["until"])))
    return f"{count} {noun} for retry until {until}; --force sends now"
