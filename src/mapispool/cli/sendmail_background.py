"""``python -m mapispool.cli.sendmail_background --profile PATH``: the detached,
upload-only Send/Receive that ``mapispool sendmail`` starts when no daemon runs on the
store (delivery mode ``background``, the default).

It sends what is due, then looks again for messages queued meanwhile (a sendmail that
found this process holding the store left its message to it) and sends those too; it
stops when a round finds nothing new. After it has let the store go it looks once more,
so that a message committed while it was stopping is not stranded: the sendmail checks
for a running spooler only after its message is committed. Messages that failed for now
wait for their retry time; the next sendmail, flush or daemon sends them then."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from ..mapi import FLUSH_NO_UI, FLUSH_UPLOAD, MAPI_E_BUSY, MapiError
from ..profile import Profile
from ..session import AsyncSession
from ..store import QueueEntry, QueueState

log = logging.getLogger("mapispool.sendmail")

#: Rounds of one process at most (each needs new messages, so this only bounds a flood).
MAX_ROUNDS = 100


def due(entries: list[QueueEntry], now: float) -> set[bytes]:
    """The entry ids a Send/Receive would offer now (not those waiting for a time)."""
    return {
        e.entry_id
        for e in entries
        if e.state is QueueState.QUEUED
        or (e.state in (QueueState.RETRY, QueueState.DEFERRED) and (e.not_before or 0) <= now)
    }


async def _due_in_store(profile: Profile) -> set[bytes]:
    async with AsyncSession.open(profile) as session:
        return due(await session.outgoing_queue(), time.time())


async def drain(profile: Profile) -> int:
    """Send until a round finds nothing new; the number of rounds run."""
    rounds = 0
    offered: set[bytes] = set()
    while rounds < MAX_ROUNDS:
        try:
            session = await AsyncSession.logon(profile)
        except MapiError as exc:
            if exc.hresult == MAPI_E_BUSY:
                return rounds  # another spooler holds the store: it sends
            raise
        async with session:
            while rounds < MAX_ROUNDS:
                rounds += 1
                await session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_NO_UI)
                now_due = due(await session.outgoing_queue(), time.time())
                if not now_due - offered:
                    break
                offered |= now_due
        # The store is free again: one last look for a message queued while it stopped.
        late = await _due_in_store(profile) - offered
        if not late:
            return rounds
        offered |= late
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mapispool-sendmail-background")
    parser.add_argument("--profile", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(drain(Profile.load(args.profile)))
    except MapiError as exc:
        log.error("background Send/Receive failed: %s", exc.message)
        return 75
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
