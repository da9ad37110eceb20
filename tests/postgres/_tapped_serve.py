"""``mapispool`` (the real command line, ``serve`` for the crash test) with a tap on the
PostgreSQL store's outcome writes, run as ``python -m tests.postgres._tapped_serve ARGS``.

The tap changes nothing: it lets every call through and appends one line per outcome
that carries a fencing token to the file named by ``MAPISPOOL_CRASH_TAP`` (one ``write``
to a file opened with O_APPEND, so a kill -9 never leaves half a line):

    ok <entry> <token> <state> <worker>        the store accepted the outcome
    fenced <entry> <token> <state> <worker>    refused with StaleClaim (a late write)
    fenced-handoff <entry> <token> - <worker>  the hand-over mark refused (StaleClaim)

With the claims the store records itself (the ``offered`` events name worker and
token), this shows which claim each accepted completion belonged to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from mapispool.store.model import StaleClaim
from mapispool.store.postgres import PostgresStore
from mapispool.store.types import Outcome, Recorded

TAP_ENV = "MAPISPOOL_CRASH_TAP"


def _line(*words: object) -> None:
    fd = os.open(os.environ[TAP_ENV], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (" ".join(str(w) for w in words) + "\n").encode())
    finally:
        os.close(fd)


def install() -> None:
    """Wrap ``PostgresStore.record`` and ``mark_handoff`` with the tap."""
    record, mark_handoff = PostgresStore.record, PostgresStore.mark_handoff

    async def tapped_record(
        self: PostgresStore, outcomes: Sequence[Outcome], *, durable: bool = False
    ) -> list[Recorded]:
        results = await record(self, outcomes, durable=durable)
        for outcome, result in zip(outcomes, results, strict=True):
            if outcome.token is None or outcome.state is None:
                continue
            kind = "ok" if result.error is None else "error"
            if isinstance(result.error, StaleClaim):
                kind = "fenced"
            _line(kind, outcome.entry_id.hex(), outcome.token, outcome.state.value,
                  self.worker_name or "-")  # fmt: skip
        return results

    async def tapped_mark_handoff(
        self: PostgresStore, entry_id: bytes, token: int | None, begun: bool
    ) -> None:
        try:
            await mark_handoff(self, entry_id, token, begun)
        except StaleClaim:
            _line("fenced-handoff", entry_id.hex(), token, "-", self.worker_name or "-")
            raise

    store_class: Any = PostgresStore
    store_class.record = tapped_record
    store_class.mark_handoff = tapped_mark_handoff


if __name__ == "__main__":
    install()
    from mapispool.cli import main

    sys.argv[0] = "mapispool"
    main()
