"""One worker thread per logon, so that blocking clients (imapclient, poplib) never run
on the event loop, and every call into one connection happens on the same thread."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Worker:
    """Runs callables on one dedicated thread and awaits their results.

    A single thread, not a pool: client objects such as ``IMAPClient`` are not
    thread-safe, and the SPI already serializes calls into a logon. Cancelling the
    awaiting coroutine does not interrupt the thread; the socket timeouts do.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the worker thread; re-raise what it raises."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop accepting work; a call still running finishes (bounded by its timeouts)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
