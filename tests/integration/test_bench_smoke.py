"""The benchmarks (bench/, scripts/bench) in their tiny version: each one runs against its
real servers and prints its ratios. Nothing here is timed; the numbers are not checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench import empty, inbound, outbound, pg_workers, process, run, scaling, submit
from bench.common import Section, Sizes

from tests.servers._util import in_ci, need, need_root
from tests.servers.dirs import ServerDirs


@pytest.fixture
def sizes() -> Sizes:
    return Sizes.smoke_sizes()


@pytest.fixture
def bench_dirs() -> Iterator[ServerDirs]:
    dirs = ServerDirs()
    yield dirs
    dirs.remove()


def _check(section: Section, capsys: pytest.CaptureFixture[str]) -> str:
    printed = capsys.readouterr().out
    assert section.rows, f"{section.title}: no rows"
    if in_ci():
        skipped = [row.name for row in section.rows if row.note.startswith("skipped")]
        assert not skipped, f"CI=true: {section.title} skipped {skipped}"
    measured = [row for row in section.rows if row.times]
    assert measured, f"{section.title}: nothing measured"
    assert "x" in printed, "no ratio printed"
    return printed


def test_outbound_flush_prints_ratios_to_raw_clients(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmark 1 sends into smtp-sink with the spooler and the raw clients, and prints
    every ratio target."""
    need("smtp-sink")
    need_root("smtp-sink")
    section = outbound.run(sizes, bench_dirs)
    printed = _check(section, capsys)
    assert "flush 4 conns / raw aiosmtplib 4 conns" in printed
    assert all(t.ratio is not None for t in section.targets)


def test_inbound_download_prints_ratios_to_raw_clients(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmark 2 downloads the same Dovecot mailbox over IMAP and POP3, spooler and raw."""
    need("dovecot")
    need_root("Dovecot")
    section = inbound.run(sizes, bench_dirs)
    _check(section, capsys)
    assert {t.label for t in section.targets} >= {
        "imap flush / raw imapclient batched + SQLite",
        "pop3 flush / raw poplib + SQLite",
    }
    assert all(t.ratio is not None for t in section.targets)


def test_submit_prints_ratio_to_raw_sqlite(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmark 3 submits through Session.submit (and the CLI when present) and raw SQLite."""
    section = submit.run(sizes, bench_dirs)
    _check(section, capsys)
    assert section.targets[0].ratio is not None


def test_scaling_reports_time_per_message_and_peak_rss(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmark 4 flushes growing queues in child processes and one big message."""
    need("smtp-sink")
    need_root("smtp-sink")
    section = scaling.run(sizes, bench_dirs)
    printed = _check(section, capsys)
    assert "peak RSS" in printed
    assert "peak growth" in printed


def test_empty_send_receive_over_five_transports(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmark 5 times an empty Send/Receive of five transports against raw checks."""
    need("dovecot")
    need_root("Dovecot")
    section = empty.run(sizes, bench_dirs)
    _check(section, capsys)
    assert [c.label for c in section.checks] == ["empty Send/Receive, 5 transports"]


def test_every_comparison_runs_in_pairs(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ratio is the median of per-pair ratios, printed with its min..max spread."""
    sizes.runs = 2
    section = submit.run(sizes, bench_dirs)
    printed = _check(section, capsys)
    target = section.targets[0]
    assert len(target.num.times) == len(target.den.times) == 2
    assert f"({target.spread}, 2 pairs)" in printed


def test_sendmail_per_process_against_msmtp(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmark 6 runs mapispool-sendmail and msmtp one process per message into the
    same sink, with a running daemon (the hand-off) and without, and says how much of a
    sendmail process is imports."""
    need("smtp-sink")
    need_root("smtp-sink")
    need("msmtp")  # scripts/install-servers installs it; under CI=true it must run
    section = process.run(sizes, bench_dirs)
    printed = _check(section, capsys)
    assert "(a) hand-off to a running daemon / msmtp, per process" in printed
    assert "(b) no daemon: mapispool-sendmail / msmtp, per process" in printed
    assert all(t.ratio is not None for t in section.targets)
    assert "importtime" in printed


def test_pg_workers_prints_both_ratios(
    sizes: Sizes, bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmark 7 (#12) drains the same queue with 2 and 1 `mapispool serve` workers on a
    throwaway PostgreSQL and with 1 on SQLite, into one smtp-sink, and prints both ratios
    and the CPU each component used."""
    need("smtp-sink")
    need_root("smtp-sink")
    section = pg_workers.run(sizes, bench_dirs)
    printed = _check(section, capsys)
    assert [t.label for t in section.targets] == [
        "PostgreSQL 2 workers (lanes = 2) / 1 worker",
        "PostgreSQL 1 worker / SQLite 1 worker",
    ]
    assert all(t.ratio is not None for t in section.targets)
    assert "CPU seconds per 1,000 messages" in printed


def test_runner_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/bench's runner writes a RESULTS.md with the targets table."""
    results = tmp_path / "RESULTS.md"
    run.main(["--smoke", "--only", "submit", "--results", str(results)])
    text = results.read_text()
    assert "## Targets" in text
    assert "Session.submit / raw SQLite" in text
    assert "ratio (min..max)" in text
