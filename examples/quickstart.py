"""Send/Receive on the embedded default, no mail account needed: two loopback accounts
exchange mail in this process. Run: python examples/quickstart.py"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mapispool import Profile, Session
from mapispool.mapi import FLUSH_DOWNLOAD, FLUSH_UPLOAD, PR_DISPLAY_NAME, PR_STATUS_STRING


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mapispool-quickstart-"))
    alice = Profile.from_dict({
        "store": str(work / "alice.db"),
        "send_immediately": False,
        "transports": {"mail": {"provider": "loopback", "address": "alice@example.test"}},
    })  # fmt: skip
    bob = Profile.from_dict({
        "store": str(work / "bob.db"),
        "send_immediately": False,
        "transports": {"mail": {"provider": "loopback", "address": "bob@example.test"}},
    })  # fmt: skip
    with Session.logon(alice) as a, Session.logon(bob) as b:
        for n in range(3):
            a.submit(
                f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: note {n}\r\n"
                f"\r\nHello Bob, number {n}.\r\n".encode()
            )
        sent = a.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD)
        received = b.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_DOWNLOAD)
        print(f"alice sent {sent.total('sent')}, bob received {received.total('received')}")
        for message in b.folder("Inbox").messages():
            print("  bob's Inbox:", message.subject)
        for row in a.status_table():
            print(f"  {row[PR_DISPLAY_NAME]:8} {row[PR_STATUS_STRING]}")


if __name__ == "__main__":
    main()
