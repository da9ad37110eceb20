"""Benchmark 4: time per message and peak RSS of flushes of 1,000 / 10,000 / 100,000 queued
messages (into a discarding transport), and one 50 MB message through smtp into smtp-sink.

Each flush runs in a fresh child process (``python -m bench.scaling flush ...``) so that
its peak RSS (VmHWM) is its own, not the setup's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.servers.dirs import ServerDirs

from .common import RECIPIENT, SENDER, Row, Section, Sizes, measure, settle_disk, skipped
from .servers import Sink, Unavailable

BENCH = "scaling"
DISCARD = {"provider": "bench.sinks:DiscardProvider"}


def big_message(mb: int) -> bytes:
    """A text message of ``mb`` MiB (76-character lines, as base64 attachments have)."""
    head = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: big\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n").encode()  # fmt: skip
    line = b"A" * 74 + b"\r\n"
    return head + line * (mb * 1024 * 1024 // len(line))


def child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.scaling", *args], check=True, capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def _flush_in_child(store: Path, transport: dict[str, Any]) -> dict[str, Any]:
    """The child's side: log on, flush, report elapsed seconds and memory in KiB."""
    from mapispool.mapi import FLUSH_UPLOAD
    from mapispool.session import Session

    from .common import reset_peak_rss, rss_kib, stopwatch
    from .queue import profile

    with Session.logon(profile(store, {"out": transport})) as session:
        before = rss_kib("VmRSS")
        peak_setup = rss_kib("VmHWM")
        reset_peak_rss()
        with stopwatch() as t:
            result = session.spooler_status().flush_queues(FLUSH_UPLOAD)
        peak = rss_kib("VmHWM")
    return {"elapsed": t[0], "sent": result.total("sent"), "rss_before": before,
            "peak": max(peak, before), "peak_setup": peak_setup}  # fmt: skip


def _flush_once(n: int, peaks: list[int]) -> float:
    """Fill a fresh store with ``n`` messages (untimed), flush it in a child process."""
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        child("fill", str(work / "store.db"), str(n))
        settle_disk()
        out = child("flush", str(work / "store.db"), json.dumps(DISCARD))
        if out["sent"] != n:
            raise RuntimeError(f"sent {out['sent']} of {n}")
        peaks.append(int(out["peak"]))
        return float(out["elapsed"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: Sizes, dirs: ServerDirs) -> Section:
    section = Section("4. Memory and scaling")
    print(f"== {section.title}", flush=True)
    rows = [Row(BENCH, f"flush {n:,} queued → discard", n) for n in sizes.scales]
    peaks: list[list[int]] = [[] for _ in sizes.scales]
    # Interleaved like the pairs: every size once per round, so drift hits all alike.
    for _ in range(sizes.scale_runs):
        for row, row_peaks in zip(rows, peaks, strict=True):
            row.times.append(_flush_once(row.n, row_peaks))
    for row, row_peaks in zip(rows, peaks, strict=True):
        row.base = rows[0] if row is not rows[0] else None
        per = (row.median or 0) / row.n * 1e6
        row.extra = f"{per:.0f} us/msg, peak RSS {max(row_peaks) / 1024:.0f} MB"
        print(row.line(), flush=True)
        section.add(row)
    peak_mb = [max(p) / 1024 for p in peaks]
    if sizes.scales[-1] >= 100_000:
        section.check(f"peak RSS with {sizes.scales[-1]:,} queued", f"{peak_mb[-1]:.0f} MB",
                      "< 80 MB", peak_mb[-1] < 80)  # fmt: skip
    if len(rows) > 1:
        growth = peak_mb[-1] / peak_mb[0] - 1
        section.check(
            f"peak RSS {sizes.scales[-1]:,} vs {sizes.scales[0]:,} queued",
            f"{growth:+.0%} ({peak_mb[0]:.0f} → {peak_mb[-1]:.0f} MB)", "within 20%",
            abs(growth) <= 0.20,
        )  # fmt: skip
    section.notes.append(
        f"Each size flushed {sizes.scale_runs} time(s), sizes interleaved round by round; "
        "each flush runs in a fresh child process so its peak RSS (VmHWM) is its own."
    )
    _big(section, sizes, dirs)
    return section


def _big(section: Section, sizes: Sizes, dirs: ServerDirs) -> None:
    size = len(big_message(sizes.big_mb))
    try:
        sink: Sink | None = Sink(dirs)
    except Unavailable as exc:
        sink = None
        section.add(skipped(BENCH, "one big message via smtp", 1, str(exc)))
    try:
        cases: list[tuple[str, dict[str, Any]]] = [("discard", DISCARD)]
        if sink is not None:
            cases.append(("smtp → smtp-sink", {"provider": "smtp", "host": sink.host,
                                              "port": sink.port, "tls": "none"}))  # fmt: skip
        for label, transport in cases:
            copies: list[float] = []

            def once(transport: dict[str, Any] = transport, copies: list[float] = copies) -> float:
                work = Path(tempfile.mkdtemp(prefix="bench-big-"))
                try:
                    child("fill-big", str(work / "store.db"), str(sizes.big_mb))
                    out = child("flush", str(work / "store.db"), json.dumps(transport))
                    if out["sent"] != 1:
                        raise RuntimeError("the big message was not sent")
                    copies.append((out["peak"] - out["rss_before"]) * 1024 / size)
                    return float(out["elapsed"])
                finally:
                    shutil.rmtree(work, ignore_errors=True)

            row = Row(BENCH, f"one {sizes.big_mb} MB message, {label}", 1)
            row = measure(row, sizes.scale_runs, once)
            held = max(copies)
            row.extra = (
                f"peak growth {held:.2f}x the message ({'met' if held <= 2 else 'missed'}: ≤2x)"
            )
            print(f"    {row.extra}", flush=True)
            section.add(row)
    finally:
        if sink is not None:
            sink.stop()


def main(argv: list[str]) -> None:
    from .queue import fill_numbered, fill_queue

    command, store = argv[0], Path(argv[1])
    if command == "fill":
        print(json.dumps({"queued": fill_numbered(store, int(argv[2]))}))
    elif command == "fill-big":
        print(json.dumps({"queued": fill_queue(store, [big_message(int(argv[2]))])}))
    elif command == "flush":
        print(json.dumps(_flush_in_child(store, json.loads(argv[2]))))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
