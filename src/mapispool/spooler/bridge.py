"""Running the store's coroutines for synchronous callers.

Plug-in transports call ``Support`` methods (``get_state``, ``save_changes``,
``has_dedupe_key``, ``delivered_recips``...) and ``OutboundMessage.begin_handoff``
synchronously, from inside their coroutines on the spooler's event loop; the store is
asynchronous. ``BlockingBridge.run`` runs one store coroutine to completion on a helper
thread's own event loop while the calling thread waits: the SPI stays source-compatible,
at the cost of blocking the spooler's loop for that one call (as the synchronous store
did before). The store's contract allows its coroutines on any thread's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BlockingBridge:
    """A helper thread with an event loop, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="mapispool-sync-support", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine ``make()`` returns and give back its result (or raise its
        error), blocking the calling thread meanwhile."""
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            raise RuntimeError("BlockingBridge.run called from its own thread")
        return asyncio.run_coroutine_threadsafe(make(), loop).result()

    def close(self) -> None:
        """Stop the helper thread (it is started again if ``run`` is called later)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
