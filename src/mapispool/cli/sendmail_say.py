"""sendmail's own messages on stderr, shared by ``sendmail_run`` and ``sendmail_deliver``
(a module of its own so that neither imports the other back).

A daemon that runs an invocation handed to it by ``mapispool-sendmail`` collects these
lines for its caller instead (``collected``): the lines go to the stream in ``STDERR``,
a context variable, so two hand-offs answered at once on the daemon's threads do not
mix their lines."""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import TextIO

#: Where ``say`` writes; unset: this process's stderr.
STDERR: ContextVar[TextIO | None] = ContextVar("sendmail_stderr", default=None)


def say(text: str) -> None:
    """One line on stderr, prefixed as sendmail's own messages are."""
    stream = STDERR.get() or sys.stderr
    stream.write(f"sendmail: {' '.join(text.split())}\n")
    stream.flush()


def warn(text: str) -> None:
    say(f"warning: {text}")
