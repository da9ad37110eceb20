"""Progress bars for a Send/Receive: one per transport, messages and bytes, fed by the
flush's progress events (``FlushProgress`` as JSON, from this process or the daemon)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class FlushBars:
    """``with FlushBars(console) as bars: backend.call("flush", ..., progress=bars)``."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<20}"),
            TextColumn("{task.fields[phase]:<8}"),
            BarColumn(),
            TextColumn("{task.fields[count]:>9} msgs"),
            TextColumn("{task.fields[size]:>10}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> FlushBars:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        name = str(event["transport"])
        task = self._tasks.get(name)
        if task is None:
            task = self.progress.add_task(name, total=None, phase="", count="", size="")
            self._tasks[name] = task
        done, total = int(event["done"]), event["total"]
        phase = str(event["phase"])
        count = f"{done}/{total}" if total is not None else str(done)
        size = decimal(int(event.get("bytes_done") or 0))
        if phase == "done":
            finished = max(done, 1)
            self.progress.update(task, total=finished, completed=finished, phase="done",
                                 count=str(done), size=size)  # fmt: skip
            return
        self.progress.update(task, total=total, completed=done, phase=phase, count=count,
                             size=size)  # fmt: skip
