"""Where the time of ``bench.pg_workers`` goes: one run of each side with cProfile in
every worker and ``pg_stat_statements`` on the server (``python -m bench.pg_workers
--profile``)."""

from __future__ import annotations

from pathlib import Path

from .common import message
from .pg_workers import LABELS, SIDES, Setup, _prepared, one_run


def _top_functions(path: Path, count: int = 14, key: str = "tottime", only: str = "") -> str:
    """The functions with the most ``key`` time in one worker's cProfile output (those
    whose file matches ``only``, if given)."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats(key).print_stats(*([only] if only else []), count)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join("    " + ln for ln in lines[start:])


def _statements(url: str, n: int, count: int = 24) -> str:
    """pg_stat_statements since the last reset (the benchmark's own polling left out):
    the statements run most often, which are those run per message."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT calls, total_exec_time, mean_exec_time, left(regexp_replace(query, "
            "'\\s+', ' ', 'g'), 70) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM "
            "pg_database WHERE datname = current_database()) AND query NOT LIKE '%count(*) "
            "FILTER%' ORDER BY calls DESC, total_exec_time DESC"
        ).fetchall()
    calls = sum(int(r[0]) for r in rows)
    total = sum(float(r[1]) for r in rows)
    head = (f"    {calls} statements ({calls / n:.1f} a message), {total:.0f} ms executing "
            f"({total / n:.3f} ms a message)")  # fmt: skip
    body = [f"    {int(c):>6} calls {t:>8.1f} ms total {m:>7.3f} ms mean  {text}"
            for c, t, m, text in rows[:count]]  # fmt: skip
    return "\n".join([head, *body])


def profile_runs(setup: Setup) -> None:
    """One run of each side with cProfile in every worker and statement statistics."""
    import psycopg

    items = _prepared(setup.n)
    raws = [message(i) for i in range(setup.n)]
    prof_dir = setup.work / "profiles"
    prof_dir.mkdir(exist_ok=True)
    with psycopg.connect(setup.pg.url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    for side in SIDES:
        with psycopg.connect(setup.pg.url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        took = one_run(setup, side, items, raws, cprofile_dir=prof_dir)
        print(f"\n== profile: {LABELS[side]}, N={setup.n}: {took:.2f} s "
              f"({setup.n / took:.0f} msg/s; cProfile slows the workers)", flush=True)  # fmt: skip
        if side != "sqlite1":
            print("  pg_stat_statements:\n" + _statements(setup.pg.url, setup.n), flush=True)
        prof = prof_dir / f"{side}-a.prof"
        print("  cProfile of worker a, by own time:\n" + _top_functions(prof), flush=True)
        top = _top_functions(prof, 30, "cumulative", "mapispool/(store|spooler|transports)")
        print("  cProfile of worker a, the store, spooler and transports by cumulative "
              "time:\n" + top, flush=True)  # fmt: skip
