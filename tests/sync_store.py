"""The asynchronous store driven from synchronous test code: ``SyncStore(path)`` opens a
``SqliteStore`` on a private event loop and runs each coroutine method to completion
(for hypothesis state machines and tests that read a store beside a running process)."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from typing import Any

from mapispool.store import Outcome, QueueEntry, QueueState, SqliteStore


class SyncStore:
    """``SqliteStore``'s methods, blocking; ``close()`` when done."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.store = SqliteStore(path)  # first: a store that fails to open leaves no loop
        self._loop = asyncio.new_event_loop()

    def run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(awaitable)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(attr(*args, **kwargs))

        return call

    def transition(self, entry_id: bytes, state: QueueState, **changes: Any) -> Any:
        """One state change (``record_one``); the old state."""
        return self.run(self.store.record_one(Outcome(entry_id, state, **changes)))

    def outgoing_queue(self, *, include_finished: bool = False) -> list[QueueEntry]:
        """Every entry (unfinished only unless ``include_finished``), in submit order."""
        from mapispool.session import all_entries

        return list(self.run(all_entries(self.store, include_finished=include_finished)))

    def submit_now(self, content: bytes, props: Any, recipients: Any, lifetime: float) -> bytes:
        now = time.time()
        entry_id: bytes = self.run(
            self.store.submit(content, props, recipients, submit_time=now, not_before=None,
                              expires_at=now + lifetime)
        )  # fmt: skip
        return entry_id

    def close(self) -> None:
        self.run(self.store.close())
        self._loop.close()

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
