"""The ``mapispool`` command (and ``mapispool-sendmail``, a drop-in for /usr/sbin/sendmail).

``main`` and ``sendmail_main`` are imported on first use: ``mapispool-sendmail`` loads only
the modules its submit path needs (``sendmail_client``, then ``sendmail_run``), not the
click application."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (import cost)
if TYPE_CHECKING:
    from typing import Any

    from .app import main
    from .sendmail_client import main as sendmail_main

__all__ = ["main", "sendmail_main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from .app import main

        return main
    if name == "sendmail_main":
        from .sendmail_client import main as sendmail_main

        return sendmail_main
    raise AttributeError(f"module 'mapispool.cli' has no attribute {name!r}")
