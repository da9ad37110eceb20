"""Supervised background tasks: a task of the spooler (the sender, the poll loops, the
request server, the status persister) that fails is logged, reported on the spooler's
status row, and restarted after a back-off, so one error (a full disk, a bug) never ends
sending or receiving silently (issue #10)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("mapispool.spooler")

#: Seconds before the first restart of a failed task; doubled per failure in a row.
RESTART_FIRST_DELAY = 1.0
#: The longest wait between two restarts.
RESTART_MAX_DELAY = 60.0


def describe(exc: BaseException) -> str:
    """One line for an error; for an error group (several offers failed at once) the
    first error it holds, which is what a person needs to see."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


class Supervisor:
    """Starts named background tasks and keeps them running.

    ``on_change`` is called whenever ``failures`` changes: a task failed (its name maps
    to a one-line description of the error) or worked again after failing (its name is
    removed). A task says it works by calling ``ok(name)``, e.g. after each pass."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.failures: dict[str, str] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._on_change = on_change

    def start(self, name: str, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` as task ``name`` (``what`` says what it does, for the status
        string), again after every failure, until it returns or is cancelled."""
        task = asyncio.get_running_loop().create_task(self._keep(name, what, run), name=name)
        self.tasks.append(task)

    def report(self, name: str, what: str, exc: BaseException) -> None:
        """A failure the caller survived (it handled the error itself, e.g. a message
        whose outcome could not be recorded): shown on the row like a failed task's,
        under ``name``, until ``ok(name)``."""
        text = f"{what} failed: {describe(exc)}"
        if self.failures.get(name) != text:
            self.failures[name] = text
            self._on_change()

    def ok(self, name: str) -> None:
        """Task ``name`` did its work: clear a failure reported for it."""
        if self.failures.pop(name, None) is not None:
            log.info("background task %s works again", name)
            self._on_change()

    async def _keep(self, name: str, what: str, run: Callable[[], Awaitable[None]]) -> None:
        delay = RESTART_FIRST_DELAY
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = describe(exc)
                if name not in self.failures:  # first failure, or it worked in between
                    delay = RESTART_FIRST_DELAY
                log.error(
                    "background task %s failed: %s; restarting it in %g s",
                    name,
                    error,
                    delay,
                    exc_info=exc,
                )
                self.failures[name] = f"{what} failed: {error}; restarting in {delay:g} s"
                self._on_change()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_DELAY)
