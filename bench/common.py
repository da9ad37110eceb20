"""What every benchmark shares: sizes, messages, timing, medians and the result rows."""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate, make_msgid
from pathlib import Path

SENDER = "alice@bench.test"
RECIPIENT = "bob@sink.test"


@dataclass
class Sizes:
    """Every N of the suite; ``smoke()`` gives the tiny version the test suite runs."""

    runs: int = 5  # pairs: every comparison runs A, B, A, B, ... this many times
    outbound: int = 5000
    msmtp: int = 20  # processes per block, each side
    postfix: int = 5000
    inbound: int = 5000
    getmail: int = 1000
    submit: int = 10000
    cli_submit: int = 50
    scales: tuple[int, ...] = (1000, 10000, 100000)
    big_mb: int = 50
    empty_runs: int = 20
    scale_runs: int = 3
    smoke: bool = False

    @classmethod
    def smoke_sizes(cls) -> Sizes:
        return cls(
            runs=1, outbound=20, msmtp=3, postfix=20, inbound=20, getmail=20, submit=20,
            cli_submit=3, scales=(20, 40), big_mb=2, empty_runs=2, scale_runs=1,
            smoke=True,
        )  # fmt: skip

    @classmethod
    def from_env(cls, smoke: bool = False) -> Sizes:
        """Defaults (or the smoke sizes), overridden by BENCH_* environment variables:
        BENCH_RUNS, BENCH_OUTBOUND_N, BENCH_MSMTP_N, BENCH_POSTFIX_N, BENCH_INBOUND_N,
        BENCH_GETMAIL_N, BENCH_SUBMIT_N, BENCH_CLI_N, BENCH_SCALES (comma list),
        BENCH_BIG_MB, BENCH_EMPTY_RUNS, BENCH_SCALE_RUNS."""
        sizes = cls.smoke_sizes() if smoke else cls()
        for env, name in (
            ("BENCH_RUNS", "runs"), ("BENCH_OUTBOUND_N", "outbound"),
            ("BENCH_MSMTP_N", "msmtp"), ("BENCH_POSTFIX_N", "postfix"),
            ("BENCH_INBOUND_N", "inbound"), ("BENCH_GETMAIL_N", "getmail"),
            ("BENCH_SUBMIT_N", "submit"), ("BENCH_CLI_N", "cli_submit"),
            ("BENCH_BIG_MB", "big_mb"), ("BENCH_EMPTY_RUNS", "empty_runs"),
            ("BENCH_SCALE_RUNS", "scale_runs"),
        ):  # fmt: skip
            if os.environ.get(env):
                setattr(sizes, name, int(os.environ[env]))
        if os.environ.get("BENCH_SCALES"):
            sizes.scales = tuple(int(x) for x in os.environ["BENCH_SCALES"].split(","))
        return sizes


def message(n: int, size: int = 2048, recipient: str = RECIPIENT) -> bytes:
    """A plain-text RFC 5322 message of about ``size`` bytes, CRLF line ends."""
    head = (
        f"From: Alice <{SENDER}>\r\nTo: Bob <{recipient}>\r\n"
        f"Subject: bench message {n}\r\nDate: {formatdate()}\r\n"
        f"Message-ID: {make_msgid(domain='bench.test')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, message %d.\r\n" % n
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


@dataclass
class Row:
    """One measured line of a benchmark: the median time of its runs and its ratio to the
    row it is compared with (``base``), or a note when it could not run."""

    bench: str
    name: str
    n: int
    times: list[float] = field(default_factory=list)
    base: Row | None = None
    extra: str = ""
    note: str = ""
    higher_is_better: bool = True

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def rate(self) -> float | None:
        m = self.median
        return self.n / m if m else None

    @property
    def ratio(self) -> float | None:
        """Throughput of this row over the base row's: the median of the per-pair ratios."""
        if self.base is None:
            return None
        return pair_ratio(self, self.base)[0]

    def cells(self) -> list[str]:
        m = self.median
        base = f" vs {self.base.name}" if self.base is not None else ""
        ratio = ""
        if self.base is not None:
            median, low, high = pair_ratio(self, self.base)
            if median is not None:
                ratio = f"{median:.2f}x ({low:.2f}..{high:.2f}){base}"
        return [
            self.name,
            str(self.n),
            f"{m:.3f}" if m is not None else "-",
            f"{self.rate:,.0f}" if self.rate else "-",
            ratio or "-",
            (self.extra + (" " if self.extra and self.note else "") + self.note).strip(),
        ]

    def line(self) -> str:
        name, n, med, rate, ratio, note = self.cells()
        return f"  {name:<44} N={n:<7} median {med:>8} s  {rate:>9} msg/s  {ratio}  {note}"


def pair_ratio(num: Row, den: Row) -> tuple[float | None, float, float]:
    """Throughput of ``num`` over ``den`` as (median, min, max) of the per-pair ratios.

    Rows measured by ``paired`` have one time per pair, taken back to back, so pair i's
    ratio compares two runs made under the same machine load. Rows not measured in pairs
    (different lengths) fall back to the ratio of the medians, min = max = that ratio."""
    if not num.times or not den.times:
        return None, 0.0, 0.0
    if len(num.times) == len(den.times):
        ratios = [(num.n / a) / (den.n / b) for a, b in zip(num.times, den.times, strict=True)]
        return statistics.median(ratios), min(ratios), max(ratios)
    r = (num.n / statistics.median(num.times)) / (den.n / statistics.median(den.times))
    return r, r, r


def paired(
    pairs: int,
    a: Row,
    once_a: Callable[[], float],
    b: Row,
    once_b: Callable[[], float],
) -> tuple[Row, Row]:
    """Run A, B, A, B, ... ``pairs`` times (each ``once`` returns its own elapsed seconds,
    so setup is not timed) and print both rows; ``b`` becomes ``a``'s base. A failed run
    raises: a pair with one side missing would make every later pair misaligned."""
    a.base = b
    for _ in range(pairs):
        gc.collect()
        a.times.append(once_a())
        gc.collect()
        b.times.append(once_b())
    print(b.line(), flush=True)
    print(a.line(), flush=True)
    return a, b


def measure(row: Row, runs: int, once: Callable[[], float | None]) -> Row:
    """Run ``once`` ``runs`` times (it returns its own elapsed seconds, so that setup is
    not timed); print the row."""
    for _ in range(runs):
        gc.collect()
        elapsed = once()
        if elapsed is not None:
            row.times.append(elapsed)
    print(row.line(), flush=True)
    return row


def skipped(bench: str, name: str, n: int, why: str) -> Row:
    row = Row(bench, name, n, note=f"skipped: {why}")
    print(row.line(), flush=True)
    return row


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def settle_disk() -> None:
    """``sync`` and a short pause: fsync-heavy runs right after big deletes are slow."""
    subprocess.run(["sync"], check=False)
    time.sleep(0.2)


def rss_kib(field_name: str = "VmRSS") -> int:
    """A field of /proc/self/status in KiB (VmRSS now, VmHWM the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` value 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@dataclass
class Target:
    """A target stated as a ratio of two rows' throughput measured in the same run."""

    label: str
    num: Row
    den: Row
    goal: float

    @property
    def ratio(self) -> float | None:
        """The median of the per-pair throughput ratios (see ``pair_ratio``)."""
        return pair_ratio(self.num, self.den)[0]

    @property
    def spread(self) -> str:
        """``min..max`` of the per-pair ratios, or "-"."""
        median, low, high = pair_ratio(self.num, self.den)
        return f"{low:.2f}..{high:.2f}" if median is not None else "-"

    @property
    def pairs(self) -> int:
        return min(len(self.num.times), len(self.den.times))

    @property
    def verdict(self) -> str:
        r = self.ratio
        if r is None:
            return "not measured"
        return "met" if r >= self.goal else "missed"

    def line(self) -> str:
        r = self.ratio
        shown = f"{r:.2f}x ({self.spread}, {self.pairs} pairs)" if r is not None else "-"
        return f"  target {self.label}: {shown} (goal ≥{self.goal}x) {self.verdict}"


@dataclass
class Check:
    """A target stated as an absolute bound (milliseconds, megabytes), not a ratio."""

    label: str
    shown: str
    goal: str
    met: bool | None

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else ("met" if self.met else "missed")

    def line(self) -> str:
        return f"  target {self.label}: {self.shown} (goal {self.goal}) {self.verdict}"


@dataclass
class Section:
    """One benchmark's rows, targets and notes, as printed and as written to RESULTS.md."""

    title: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def target(self, label: str, num: Row, den: Row, goal: float) -> None:
        t = Target(label, num, den, goal)
        self.targets.append(t)
        print(t.line(), flush=True)

    def check(self, label: str, shown: str, goal: str, met: bool | None) -> None:
        c = Check(label, shown, goal, met)
        self.checks.append(c)
        print(c.line(), flush=True)
