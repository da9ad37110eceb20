"""sendmail's own messages on stderr, shared by ``sendmail_run`` and ``sendmail_deliver``
(a module of its own so that neither imports the other back)."""

from __future__ import annotations

import sys


def say(text: str) -> None:
    """One line on stderr, prefixed as sendmail's own messages are."""
    sys.stderr.write(f"sendmail: {' '.join(text.split())}\n")
    sys.stderr.flush()


def warn(text: str) -> None:
    say(f"warning: {text}")
