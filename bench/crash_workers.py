"""Crash bench for many workers (issue #12): three ``mapispool serve --worker NAME``
processes on one PostgreSQL store, killed with kill -9 at random and paused past their
lease (SIGSTOP, then SIGCONT), while a ``Session`` process and ``mapispool submit`` runs
submit; then the queue is drained and reconciled against what an aiosmtpd sink
recorded, the claims the store issued and the outcomes it accepted (the same run as
tests/postgres/test_serve_crash.py, which has the details).

    .venv/bin/python -m bench.crash_workers --kills 200 --seed 7

It starts its own throwaway PostgreSQL cluster (``MAPISPOOL_TEST_PG``: use that server)
and prints one line of figures (``--json`` also writes them). Exit 1 when anything was
lost, duplicated outside the uncertain messages, or written late by a fenced-off worker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

from tests.postgres._serve_crash import CrashSettings, run_crash, slow_sink_answer
from tests.servers.dirs import ServerDirs
from tests.servers.postgres import URL_ENV, PostgresServer
from tests.servers.smtp import SmtpServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lease", type=float, default=2.0, help="store_lease in seconds")
    parser.add_argument("--pause-share", type=float, default=0.12)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    settings = CrashSettings(
        kills=args.kills, seed=args.seed, lease=args.lease, pause_share=args.pause_share
    )
    dirs = ServerDirs()  # the PostgreSQL user must reach its data directory
    server = None
    url = os.environ.get(URL_ENV)
    try:
        if not url:
            server = PostgresServer(dirs.make("postgres")).start()
            url = server.url
        smtp = SmtpServer(data_answer=slow_sink_answer).start()
        try:
            schema = f"crash_{uuid.uuid4().hex[:8]}"
            report = run_crash(url, schema, dirs.make("run"), smtp, settings)
        finally:
            smtp.stop()
    finally:
        if server is not None:
            server.stop()
        dirs.remove()
    print(report.summary())
    for problem in report.problems():
        print("PROBLEM:", problem)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
