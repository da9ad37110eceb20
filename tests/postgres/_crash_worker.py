"""One worker of the PostgreSQL crash test (test_crash.py), run as a process of its own:
claims pages, marks the hand-over, "sends" by appending a line to the sink file (the
stand-in for a server that received the message), records the outcome, forever.

Arguments: URL SCHEMA NAME LEASE LOGDIR. Every line it writes is one ``write`` to a file
opened with O_APPEND, so a kill -9 never leaves half a line:
  claims.log    claim <entry> <token>
  sink.log      sent <entry> <worker> <token>
  accepted.log  ok <entry> <token>         (record accepted)
  fenced.log    fenced <entry> <token>     (StaleClaim: a late write refused)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from mapispool.store.model import QueueState, StaleClaim
from mapispool.store.postgres import PostgresStore
from mapispool.store.types import Outcome, RecipientOutcome, Route

ROUTE = Route("sink", (("sink", ("SMTP",)),))


class Log:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def line(self, *words: object) -> None:
        os.write(self.fd, (" ".join(str(w) for w in words) + "\n").encode())


async def run(url: str, schema: str, name: str, lease: float, logs: Path) -> None:
    store = await PostgresStore.open(url, schema=schema, lease=lease)
    claims_log, sink, accepted, fenced = (
        Log(logs / f"{n}.log") for n in ("claims", "sink", "accepted", "fenced")
    )
    assert await store.acquire_spooler_lock(name)
    while True:
        claims = await store.claim(ROUTE, now=time.time(), limit=4, lease=lease, worker=name)
        if not claims:
            await store.recover(parked=False, now=time.time())
            await asyncio.sleep(0.02)
            continue
        for claim in claims:
            claims_log.line("claim", claim.entry_id.hex(), claim.token)
        for claim in claims:
            eid = claim.entry_id
            try:
                await store.mark_handoff(eid, claim.token, True)
            except StaleClaim:
                fenced.line("fenced", eid.hex(), claim.token)
                continue
            sink.line("sent", eid.hex(), name, claim.token)
            rows = tuple(r.row_id for r in claim.recipients)
            (recorded,) = await store.record(
                [Outcome(eid, QueueState.SENT, token=claim.token, folder="Sent Items",
                         recipient_outcomes=[RecipientOutcome(rows, "delivered", "sink")])]
            )  # fmt: skip
            if isinstance(recorded.error, StaleClaim):
                fenced.line("fenced", eid.hex(), claim.token)
            elif recorded.error is None:
                accepted.line("ok", eid.hex(), claim.token)
            else:
                raise recorded.error


if __name__ == "__main__":
    url, schema, name, lease, logdir = sys.argv[1:6]
    print("ready", flush=True)
    asyncio.run(run(url, schema, name, float(lease), Path(logdir)))
