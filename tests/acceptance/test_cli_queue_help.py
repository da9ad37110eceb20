"""``mapispool queue retry --help`` names every state the retry action applies to, as
the one table of queue actions (``store.types.QUEUE_ACTIONS``) has them."""

from __future__ import annotations

from mapispool.store.types import QUEUE_ACTIONS, QueueAction

from .test_cli_support import run


def test_retry_help_names_every_state_retry_applies_to() -> None:
    helped = run(None, "queue", "retry", "--help")
    assert helped.returncode == 0, helped.stderr
    text = " ".join(helped.stdout.split())
    starts, _to, _event = QUEUE_ACTIONS[QueueAction.RETRY]
    for state in starts:
        assert state.value.replace("_", " ") in text, f"{state.value} missing from: {text}"
    assert "backoff" not in text
