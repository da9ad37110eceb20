"""A submitting process of the crash test: ``python -m tests.postgres._session_submitter
PROFILE FIRST SEED STOPFILE`` opens a ``Session`` on the profile's store and submits
bursts of 1 to 12 messages (a burst keeps workers busy when the kills come), numbered
from FIRST, until STOPFILE exists. Each message carries ``X-Crash-Id: N``; for each one
stored it prints ``N <entry id>`` (flushed at once: the line is the proof of acceptance).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from mapispool.session import Session


def crash_message(number: int) -> bytes:
    """A message the sink can tell apart: ``X-Crash-Id`` and the subject carry ``number``."""
    return (
        f"From: crash@example.test\r\nTo: rcpt{number % 7}@example.test\r\n"
        f"Subject: crash {number}\r\nX-Crash-Id: {number}\r\n"
        f"Message-ID: <crash-{number}@example.test>\r\n\r\nbody {number}\r\n"
    ).encode()


def main(profile: str, first: int, seed: int, stop: Path) -> None:
    rng = random.Random(seed)
    number = first
    with Session.open(profile) as session:
        while not stop.exists():
            for _ in range(rng.randint(1, 12)):
                entry_id = session.submit(crash_message(number))
                print(number, entry_id.hex(), flush=True)
                number += 1
            time.sleep(rng.uniform(0.2, 1.2))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
