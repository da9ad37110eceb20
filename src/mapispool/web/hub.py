"""What happens in the daemon, as events for ``GET /api/events`` and counts for metrics.

The hub listens to the session (status-table Advise, new mail), watches the queue's
counts by state, and follows every Send/Receive the daemon runs, whoever asked for it:
the spooler's row carries the FLUSH bits while one runs (MAPI's STATUS_*_FLUSH on the
spooler's status row), so a flush's start and end are seen there; a flush started
through the web API also reports its progress message by message.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..app.shapes import result_dict, row_dict
from ..mapi import PR_STATUS_CODE, STATUS_INBOUND_FLUSH, STATUS_OUTBOUND_FLUSH, MapiError
from ..session import AsyncSession
from ..spi import InboundMessage
from ..spooler.flush import FlushResult
from ..spooler.status import SPOOLER_ROW
from ..status_changes import StatusChange

log = logging.getLogger("mapispool.web")

Event = tuple[str, dict[str, Any]]
#: Events a slow reader may fall behind by before it is dropped (its page reconnects).
BACKLOG = 2000
RECENT_FLUSHES = 20
QUEUE_POLL_SECONDS = 1.0
TICK_SECONDS = 0.5
_COUNTED = ("sent", "received", "failed", "retried", "deferred", "uncertain")
_FLUSH_BITS = STATUS_INBOUND_FLUSH | STATUS_OUTBOUND_FLUSH


@dataclass
class FlushRecord:
    """One Send/Receive as the page shows it: ``origin`` is ``"web"`` for one the API
    started, ``"daemon"`` for the others (schedule, SIGUSR1, a CLI client)."""

    id: str
    origin: str
    started: float = field(default_factory=time.time)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "origin": self.origin,
            "started": self.started,
            "running": self.result is None,
            "progress": list(self.progress.values()),
            "result": self.result,
        }


FlushListener = Callable[[FlushResult], None]


class EventHub:
    """Fans the daemon's events out to every ``/api/events`` reader and keeps the recent
    flushes. ``start`` attaches it to a session; ``close`` ends every reader's stream."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.recent: deque[FlushRecord] = deque(maxlen=RECENT_FLUSHES)
        self.current: FlushRecord | None = None
        self._pending: FlushRecord | None = None
        self._result_of_current: FlushResult | None = None
        self._readers: set[asyncio.Queue[Event | None]] = set()
        self._ids = itertools.count(1)
        self._flush_listeners: list[FlushListener] = []
        self._unadvise: Callable[[], None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.queue_counts: dict[str, int] = {}

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        self._unadvise = self.session.advise_status(self._status_changed)
        self.session.on_newmail(self._newmail)
        self._poller = asyncio.get_running_loop().create_task(self._watch_queue())

    def close(self) -> None:
        if self._unadvise is not None:
            self._unadvise()
            self._unadvise = None
        for task in (self._poller, self._ticker):
            if task is not None:
                task.cancel()
        for reader in list(self._readers):
            reader.put_nowait(None)

    def on_flush_done(self, listener: FlushListener) -> None:
        """Call ``listener(result)`` when any Send/Receive ends (metrics use it)."""
        self._flush_listeners.append(listener)

    # -- readers --------------------------------------------------------------------------

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        for reader in list(self._readers):
            if reader.qsize() >= BACKLOG:
                self._readers.discard(reader)  # too slow: its stream ends, the page reconnects
                reader.put_nowait(None)
            else:
                reader.put_nowait((kind, data))

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until the hub closes or the reader falls behind."""
        reader: asyncio.Queue[Event | None] = asyncio.Queue()
        self._readers.add(reader)
        try:
            while (event := await reader.get()) is not None:
                yield event
        finally:
            self._readers.discard(reader)

    # -- flushes --------------------------------------------------------------------------

    def expect_flush(self) -> FlushRecord:
        """A flush the API is about to start: its record, with the id the API answers."""
        self._pending = FlushRecord(str(next(self._ids)), "web")
        return self._pending

    def forget_flush(self, record: FlushRecord) -> None:
        """The flush did not start (MAPI_E_BUSY, a bad transport name)."""
        if self._pending is record:
            self._pending = None

    def progress(self, record: FlushRecord, event: dict[str, Any]) -> None:
        """A progress event (``app.shapes.progress_dict``) of a flush the API started: a
        transport's turn begun, message n of N, its end with its counts."""
        data = {**event, "flush": record.id}
        running = self.session.spooler.running_flush
        counts = running.transports.get(str(event["transport"])) if running else None
        if event["phase"] == "done" and counts is not None:
            data["counts"] = counts.as_dict()
        record.progress[str(event["transport"])] = data
        self.publish("flush-progress", data)

    def _flush_bits(self, code: int) -> None:
        if code & _FLUSH_BITS and self.current is None:
            record = self._pending or FlushRecord(str(next(self._ids)), "daemon")
            self._pending = None
            self.current = record
            self._result_of_current = self.session.spooler.running_flush
            self.recent.appendleft(record)
            self.publish("flush-begun", record.as_dict())
            result = self._result_of_current
            if record.origin != "web" and result is not None:
                self._ticker = asyncio.get_running_loop().create_task(self._tick(record, result))
        elif not code & _FLUSH_BITS and self.current is not None:
            record, result = self.current, self._result_of_current
            self.current = self._result_of_current = None
            if self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None
            if result is None:
                return
            if record.origin != "web":
                for counts in result.transports.values():
                    self._publish_counts(record, counts.as_dict(), "done")
            record.result = result_dict(result)
            self.publish("flush-ended", record.as_dict())
            for listener in list(self._flush_listeners):
                try:
                    listener(result)
                except Exception:
                    log.exception("flush listener failed")

    async def _tick(self, record: FlushRecord, result: FlushResult) -> None:
        """Progress of a flush started elsewhere (no callback of ours runs in it): the
        counts of its result so far, per transport, whenever they change."""
        last: dict[str, dict[str, object]] = {}
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for name, counts in list(result.transports.items()):
                now = counts.as_dict()
                if last.get(name) != now:
                    last[name] = now
                    self._publish_counts(record, now, "running")

    def _publish_counts(self, record: FlushRecord, counts: dict[str, object], phase: str) -> None:
        done = sum(int(str(counts[k])) for k in _COUNTED)
        data = {"event": "progress", "flush": record.id, "transport": counts["transport"],
                "phase": phase, "done": done, "total": None, "counts": counts}  # fmt: skip
        record.progress[str(counts["transport"])] = data
        self.publish("flush-progress", data)

    # -- sources --------------------------------------------------------------------------

    def _status_changed(self, change: StatusChange) -> None:
        self.publish("status", row_dict(change.row))
        if change.name == SPOOLER_ROW:
            self._flush_bits(int(change.row.get(PR_STATUS_CODE, 0)))

    def _newmail(self, message: InboundMessage) -> None:
        entry_id = message.entry_id.hex() if message.entry_id else None
        self.publish("newmail", {"entry_id": entry_id})

    def queue_changed(self, entry_id: str, action: str) -> None:
        """A person acted on a queued message through the API."""
        self.publish("queue", {"entry_id": entry_id, "action": action, "counts": self.queue_counts})

    async def read_queue_counts(self) -> dict[str, int]:
        counts = {s.value: n for s, n in (await self.session.store.count_by_state()).items()}
        self.queue_counts = counts
        return counts

    async def _watch_queue(self) -> None:
        """The queue's counts by state, published whenever they differ from the last look;
        read only while someone follows the events (counting is a scan of the queue)."""
        while True:
            await asyncio.sleep(QUEUE_POLL_SECONDS)
            if not self._readers:
                continue
            before = self.queue_counts
            try:
                counts = await self.read_queue_counts()
            except MapiError:
                log.warning("could not count the queue", exc_info=True)
                continue
            if counts != before:
                self.publish("queue", {"counts": counts})
