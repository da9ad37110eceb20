"""The ``mapispool`` command (and ``mapispool-sendmail``, a drop-in for /usr/sbin/sendmail)."""

from __future__ import annotations

from .app import main
from .sendmail import sendmail_main

__all__ = ["main", "sendmail_main"]
