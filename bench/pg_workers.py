"""Issue #12's worker benchmarks: real ``mapispool serve`` processes draining one queue.

Three sides, run in rotating order in every round (so each pair ran under the same load):

- ``pg2``: 2 workers (``serve --worker a`` and ``b``) on a PostgreSQL store, the transport
  with ``lanes = 2``;
- ``pg1``: 1 worker on the same server, same profile;
- ``sqlite1``: 1 ``serve`` on a SQLite store, same profile otherwise.

Each run starts its worker processes on an empty store and waits until they are idle;
then N prepared messages are committed in one transaction (untimed preparation) and the
clock runs from that commit (whose NOTIFY, or for SQLite the daemon's ``submitted`` news,
wakes the workers) until the store shows all N sent into the same smtp-sink. Both stores
are equally durable: PostgreSQL runs with ``fsync``, ``full_page_writes`` and
``synchronous_commit`` on, as SQLite runs WAL with ``synchronous = FULL`` for durable
commits (each store's non-durable commits are NORMAL / ``synchronous_commit = off``).

Each run also records the CPU seconds used by the workers, by PostgreSQL (the postmaster
and its children) and by the sink, from /proc, which says what the 2 cores were busy
with. ``--profile`` adds one run of each side with cProfile in every worker and
``pg_stat_statements`` on the server, and prints where the time went.

    .venv/bin/python -m bench.pg_workers [--n 2000] [--runs 5] [--profile]
    scripts/bench --only pg
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.servers._util import stop_process, wait_for_ports, wait_until
from tests.servers.dirs import ServerDirs
from tests.servers.postgres import PostgresServer

from mapispool.store.model import Recipient

from .common import Row, Section, Sizes, message, skipped
from .pg_usage import WAIT, Usage, children
from .queue import fill_queue
from .servers import Sink, Unavailable

BENCH = "pg"
LANES = 2
SIDES = ("pg2", "pg1", "sqlite1")
LABELS = {
    "pg2": "PostgreSQL, 2 workers, lanes = 2",
    "pg1": "PostgreSQL, 1 worker",
    "sqlite1": "SQLite, 1 worker",
}


class DurablePostgres(PostgresServer):
    """The tests' throwaway cluster, but as durable as SQLite FULL: fsync, full page
    writes and synchronous_commit on (PostgreSQL's defaults). ``stats`` loads
    pg_stat_statements for ``--profile``."""

    def __init__(self, base: Path, *, stats: bool = False) -> None:
        self.stats = stats
        super().__init__(base)

    def start(self) -> DurablePostgres:
        extra = ["-c", "shared_preload_libraries=pg_stat_statements"] if self.stats else []
        log = self.log.open("ab")
        with log:
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.socket_dir), "-c", f"listen_addresses={self.host}",
                 "-c", "fsync=on", "-c", "full_page_writes=on", "-c", "synchronous_commit=on",
                 "-c", "max_connections=100", *extra],
                user=self.user, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        try:
            wait_for_ports([self.port], timeout=30.0, proc=self._proc, log=self.log)
            wait_until(self._accepts_queries, 30.0, "PostgreSQL to accept queries", 0.05)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid


# -- one run ------------------------------------------------------------------------------


@dataclass
class Setup:
    """What every run shares: the servers, the messages, where to write."""

    pg: DurablePostgres
    sink: Sink
    work: Path
    n: int
    usages: dict[str, list[Usage]] = field(default_factory=dict)

    @property
    def sink_pid(self) -> int:
        proc = self.sink._proc
        assert proc is not None
        return proc.pid

    def profile_file(self, run_dir: Path, store: str, schema: str | None) -> Path:
        path = run_dir / "profile.toml"
        head = f'store = "{store}"\n' + (f'store_schema = "{schema}"\n' if schema else "")
        path.write_text(
            head + "[transports.out]\n"
            f'provider = "smtp"\nhost = "{self.sink.host}"\nport = {self.sink.port}\n'
            f'tls = "none"\nlanes = {LANES}\n'
        )
        return path


Prepared = tuple[bytes, dict[int, Any], list[Recipient]]


def _prepared(n: int) -> list[Prepared]:
    from mapispool.submission import prepare

    out = []
    for i in range(n):
        p = prepare(message(i), recipients=None, now=datetime.now(UTC))
        out.append((p.content, p.props, list(p.recipients)))
    return out


def _start_worker(
    profile: Path, name: str, log: Path, cprof: Path | None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable]
    if cprof is not None:
        cmd += ["-m", "cProfile", "-o", str(cprof)]
    cmd += ["-m", "mapispool.cli", "--profile", str(profile), "serve"]
    if name:
        cmd += ["--worker", name]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            stop_process(proc)


async def _fill_pg(url: str, schema: str, items: list[Prepared]) -> None:
    """Queue ``items`` as ``PostgresStore.submit`` does, but all in one transaction (the
    fill is not what is measured), with one NOTIFY at its commit."""
    from mapispool.store.postgres import PostgresStore
    from mapispool.store.postgres._rows import FOLDER_IDS, filed_message
    from mapispool.store.postgres._script import Script

    store = await PostgresStore.open(url, schema=schema)
    try:
        now = time.time()
        script = Script()
        script.add("BEGIN")
        for content, props, recipients in items:
            _entry_id, params = filed_message(
                FOLDER_IDS["Outbox"], content, props, recipients, now, ("submitted", "queued"),
                state="queued", expires_at=now + 86400, due_at=now,
            )  # fmt: skip
            script.call("file_message", params)
        script.call("notify_submitted", (store.channel,))
        script.add("COMMIT")
        async with store.scripted("queueing the benchmark's messages") as conn:
            await script.run(conn)
    finally:
        await store.close()


def _wake_sqlite(profile: Path) -> None:
    """Tell the daemon that the queue changed, as ``submit`` does after its commit."""
    from mapispool.daemon.client import wake
    from mapispool.profile import Profile

    if not wake(Profile.load(profile), "00" * 16):
        raise RuntimeError("the SQLite daemon did not answer its control socket")


def _sqlite_ready(profile: Path) -> bool:
    from mapispool.daemon.client import DaemonBackend
    from mapispool.daemon.protocol import socket_path
    from mapispool.profile import Profile

    daemon = DaemonBackend.connect(socket_path(Profile.load(profile).store_path()), None)
    if daemon is None:
        return False
    daemon.close()
    return True


@contextmanager
def _counter(side: str, setup: Setup, store: Path | str) -> Iterator[Callable[[], tuple[int, int]]]:
    """A function giving (sent, finished otherwise) from one open read connection."""
    if side == "sqlite1":
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        query = ("SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE "
                 "state IN ('failed', 'cancelled', 'uncertain')) FROM queue")  # fmt: skip
        try:
            yield lambda: conn.execute(query).fetchone()
        finally:
            conn.close()
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(setup.pg.url, autocommit=True) as pconn:
        pquery = sql.SQL(
            "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE "
            "state IN ('failed', 'cancelled', 'uncertain')) FROM {}.queue"
        ).format(sql.Identifier(str(store)))

        def count() -> tuple[int, int]:
            row = pconn.execute(pquery).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        yield count


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _workers_registered(url: str, schema: str, names: list[str]) -> bool:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                sql.SQL("SELECT name FROM {}.workers").format(sql.Identifier(schema))
            ).fetchall()
    except psycopg.Error:  # the schema is not there yet
        return False
    return set(names) <= {r[0] for r in rows}


def one_run(setup: Setup, side: str, items: list[Prepared], raws: list[bytes],
            cprofile_dir: Path | None = None) -> float:  # fmt: skip
    """Start the side's workers idle, queue N in one commit, time until all N are sent."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=setup.work))
    names = ["a", "b"] if side == "pg2" else ["a"]
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if side == "sqlite1":
        store: Path | str = run_dir / "store.db"
        profile = setup.profile_file(run_dir, str(store), None)
    else:
        store = schema
        profile = setup.profile_file(run_dir, setup.pg.url, schema)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in names:
            cprof = cprofile_dir / f"{side}-{name}.prof" if cprofile_dir else None
            procs.append(_start_worker(profile, "" if side == "sqlite1" else name,
                                       run_dir / f"worker-{name}.log", cprof))  # fmt: skip
        if side == "sqlite1":
            wait_until(lambda: _sqlite_ready(profile), 60.0, "the SQLite daemon", 0.05)
        else:
            wait_until(lambda: _workers_registered(setup.pg.url, schema, names), 60.0,
                       "the workers to register", 0.05)  # fmt: skip
        time.sleep(1.0)  # each serve runs a Send/Receive at start: let it end (empty queue)
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a worker exited early; see {run_dir}")
        postmaster = setup.pg.pid
        groups: dict[str, Callable[[], list[int]]] = {
            "workers": lambda: [p.pid for p in procs],
            "sink": lambda: [setup.sink_pid],
            "postgres": lambda: [postmaster, *children(postmaster)],
            "bench": lambda: [os.getpid()],
        }
        if side == "sqlite1":
            fill_queue(Path(store), raws, batch=len(raws))
            before = Usage.snapshot(groups)
            started = time.perf_counter()
            _wake_sqlite(profile)
        else:
            asyncio.run(_fill_pg(setup.pg.url, schema, items))
            before = Usage.snapshot(groups)
            started = time.perf_counter()
        with _counter(side, setup, store) as count:
            deadline = time.monotonic() + 120 + setup.n / 10
            while True:
                sent, other = count()
                if sent + other >= setup.n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{side}: {sent} of {setup.n} sent; see {run_dir}")
                time.sleep(0.02)
        elapsed = time.perf_counter() - started
        usage = Usage.between(before, Usage.snapshot(groups), elapsed)
        if other:
            raise RuntimeError(f"{side}: {other} of {setup.n} not sent; see {run_dir}")
        setup.usages.setdefault(side, []).append(usage)
        shutil.rmtree(run_dir, ignore_errors=True)  # kept (with the logs) after a failure
        return elapsed
    finally:
        _stop_workers(procs)
        if side != "sqlite1":
            _drop_schema(setup.pg.url, schema)


# -- the benchmark ------------------------------------------------------------------------


def _usage_note(setup: Setup) -> str:
    """CPU seconds per 1,000 messages by component, median over the runs of each side."""
    lines = [
        "CPU seconds per 1,000 messages (median of the runs; `other` is the rest of the "
        "machine: other work on the shared host; `waiting` is time runnable but without a "
        "core, from schedstat), and the cores busy meanwhile (of 2):"
    ]
    for side in SIDES:
        usages = setup.usages.get(side)
        if not usages:
            continue
        keys = ["workers", "postgres", "sink", "bench", "other", WAIT + "workers",
                WAIT + "postgres"]  # fmt: skip
        cells = ", ".join(
            f"{k} {statistics.median(u.parts[k] for u in usages) / setup.n * 1000:.2f}"
            for k in keys
        )
        busy = statistics.median(u.busy for u in usages)
        lines.append(f"- {LABELS[side]}: {cells}; {busy:.2f} cores busy")
    return "\n".join(lines)


def rounds(setup: Setup, runs: int) -> dict[str, Row]:
    """``runs`` rounds of the three sides, in rotating order, one time per side a round."""
    items = _prepared(setup.n)
    raws = [message(i) for i in range(setup.n)]
    rows = {side: Row(BENCH, LABELS[side], setup.n) for side in SIDES}
    for i in range(runs):
        order = SIDES[i % 3 :] + SIDES[: i % 3]
        for side in order:
            rows[side].times.append(one_run(setup, side, items, raws))
            print(f"  round {i + 1} {side}: {rows[side].times[-1]:.2f} s", flush=True)
    return rows


@contextmanager
def servers(dirs: ServerDirs, n: int, *, stats: bool = False) -> Iterator[Setup]:
    """A durable throwaway PostgreSQL, an smtp-sink and a work directory."""
    base = dirs.make("pg-workers")
    base.chmod(0o711)
    pg = DurablePostgres(base, stats=stats)
    pg.start()
    try:
        sink = Sink(dirs)
        try:
            yield Setup(pg, sink, dirs.make("pg-workers-runs"), n)
        finally:
            sink.stop()
    finally:
        pg.stop()


def bench_n(sizes: Sizes) -> int:
    """N messages a run: BENCH_PG_N, else 2,000 (20 in the smoke version)."""
    return int(os.environ.get("BENCH_PG_N") or (20 if sizes.smoke else 2000))


def run(sizes: Sizes, dirs: ServerDirs) -> Section:
    section = Section("7. Many workers: PostgreSQL (issue #12)")
    print(f"== {section.title}", flush=True)
    n = bench_n(sizes)
    with contextlib.ExitStack() as stack:
        try:
            setup = stack.enter_context(servers(dirs, n))
        except (Unavailable, RuntimeError) as exc:
            section.add(skipped(BENCH, "everything", n, str(exc)))
            return section
        rows = rounds(setup, sizes.runs)
        for side in SIDES:
            print(rows[side].line(), flush=True)
            section.add(rows[side])
        rows["pg2"].base = rows["pg1"]
        rows["pg1"].base = rows["sqlite1"]
        section.target("PostgreSQL 2 workers (lanes = 2) / 1 worker", rows["pg2"], rows["pg1"], 1.3)
        section.target("PostgreSQL 1 worker / SQLite 1 worker", rows["pg1"], rows["sqlite1"], 0.7)
        section.notes.append(
            "Real `mapispool serve` processes, started idle on an empty store; the clock runs "
            "from the commit of N prepared messages in one transaction until the store shows "
            "all N sent into the same smtp-sink. PostgreSQL (on this machine) runs with fsync, "
            "full_page_writes and synchronous_commit on; SQLite with WAL and FULL durable "
            "commits. The three sides run in rotating order each round. See bench/PG_WORKERS.md."
        )
        section.notes.append(_usage_note(setup))
        print(section.notes[-1], flush=True)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=0, help="messages a run (default 2000)")
    parser.add_argument("--runs", type=int, default=5, help="rounds of the three sides")
    parser.add_argument("--profile", action="store_true", help="only the profiled runs")
    args = parser.parse_args()
    sizes = Sizes(runs=args.runs)
    if args.n:
        os.environ["BENCH_PG_N"] = str(args.n)
    dirs = ServerDirs()
    try:
        if args.profile:
            from .pg_profile import profile_runs

            with servers(dirs, bench_n(sizes), stats=True) as setup:
                profile_runs(setup)
        else:
            run(sizes, dirs)
    finally:
        dirs.remove()


if __name__ == "__main__":
    main()
