"""``Prefetch``: the next download batch, loaded while the current one commits.

An inbound transport hands a batch to the store (``InboundBatch.save``) and, meanwhile,
lets its worker thread fetch the next one; the two overlap instead of taking turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Prefetch:
    """At most one background load at a time, on the running event loop."""

    def __init__(self) -> None:
        self._task: asyncio.Future[None] | None = None

    @property
    def pending(self) -> bool:
        """True while a load was started and not yet finished or dropped."""
        return self._task is not None

    def start(self, load: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``load()`` in the background unless a load is pending already."""
        if self._task is None:
            self._task = asyncio.ensure_future(load())

    async def finish(self) -> bool:
        """Wait for the pending load and re-raise its error; True when there was one."""
        task, self._task = self._task, None
        if task is None:
            return False
        await task
        return True

    def drop(self) -> None:
        """Forget the pending load: cancelled if it still runs, its error (if any)
        retrieved and discarded (the pass that wanted it is over). A blocking call the
        load made on a worker thread still runs to its end there."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()
