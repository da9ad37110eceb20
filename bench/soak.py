"""Soak: submit many messages while Send/Receive runs continuously; nothing lost, nothing
sent twice, memory flat.

One process: a thread submits N messages through ``Session.submit`` while the main thread
runs ``flush_queues(FLUSH_UPLOAD, wait=True)`` back to back against Postfix's smtp-sink.
The resident set size is sampled every N/10 submissions. At the end every message id is
looked up in the sink's dumps.

    .venv/bin/python bench/soak.py --messages 50000      # needs root (smtp-sink)
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds modules named like the standard library's (queue.py): keep it off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
for entry in (str(ROOT), str(ROOT / "src")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from mapispool.mapi import FLUSH_UPLOAD  # noqa: E402
from mapispool.profile import Profile  # noqa: E402
from mapispool.session import Session  # noqa: E402

ID_HEADER = re.compile(rb"^X-Soak-Id: (\d+)", re.MULTILINE)


@dataclass
class SoakReport:
    submitted: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    flushes: int = 0
    seconds: float = 0.0
    rss_mb: list[float] = field(default_factory=list)

    @property
    def rss_growth_mb(self) -> float:
        """Growth of the RSS over the second half of the run (the first half warms up)."""
        half = self.rss_mb[len(self.rss_mb) // 2 :]
        return max(half) - min(half) if half else 0.0

    def lines(self) -> list[str]:
        rate = self.submitted / self.seconds if self.seconds else 0.0
        return [
            f"submitted {self.submitted} in {self.seconds:.0f} s ({rate:.0f}/s) with "
            f"{self.flushes} flushes running back to back",
            f"delivered {self.delivered}, delivered twice {self.duplicated}, lost {self.lost}",
            "RSS (MB) at each tenth: " + ", ".join(f"{r:.0f}" for r in self.rss_mb),
            f"RSS growth over the second half: {self.rss_growth_mb:.1f} MB",
        ]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def soak(workdir: Path, sink: Any, messages: int) -> SoakReport:
    """Run the soak against ``sink`` (a tests.servers.smtp_sink.SmtpSink)."""
    profile = Profile.from_dict(
        {
            "store": str(workdir / "store.db"),
            "send_immediately": False,
            "transports": {
                "out": {"provider": "smtp", "host": sink.host, "port": sink.port, "tls": "none"}
            },
        }
    )
    report = SoakReport()
    every = max(1, messages // 10)
    started = time.monotonic()
    with Session.logon(profile) as session:
        errors: list[BaseException] = []

        def submitter() -> None:
            try:
                for n in range(messages):
                    session.submit(
                        f"From: soak@example.test\r\nTo: sink@example.test\r\nSubject: "
                        f"soak {n}\r\nX-Soak-Id: {n}\r\n\r\n{'body line ' * 30}\r\n".encode(),
                        delete_after_submit=True,
                    )
                    report.submitted += 1
                    if (n + 1) % every == 0:
                        report.rss_mb.append(rss_mb())
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=submitter)
        thread.start()
        while thread.is_alive():
            session.spooler_status().flush_queues(FLUSH_UPLOAD, wait=True)
            report.flushes += 1
        thread.join()
        if errors:
            raise errors[0]
        while session.outgoing_queue():
            session.spooler_status().flush_queues(FLUSH_UPLOAD, wait=True)
            report.flushes += 1
    report.seconds = time.monotonic() - started
    arrived: Counter[int] = Counter()
    for path in sink.dump_dir.rglob("*"):
        if path.is_file():
            arrived.update(int(m) for m in ID_HEADER.findall(path.read_bytes()))
    report.delivered = sum(1 for n in range(messages) if arrived[n])
    report.duplicated = sum(1 for n in range(messages) if arrived[n] > 1)
    report.lost = messages - report.delivered
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args(argv)

    from tests.servers.dirs import ServerDirs
    from tests.servers.smtp_sink import SmtpSink

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    dirs = ServerDirs()
    sink = None
    try:
        sink = SmtpSink(dirs.make("smtp-sink")).start()
        with tempfile.TemporaryDirectory(prefix="mapispool-soak-") as work:
            report = soak(Path(work), sink, args.messages)
    finally:
        if sink is not None:
            sink.stop()
        dirs.remove()
    for line in report.lines():
        print(line)
    return 0 if not (report.lost or report.duplicated) else 1


if __name__ == "__main__":
    sys.exit(main())
