"""Run every benchmark and rewrite bench/RESULTS.md: ``scripts/bench`` (``--smoke`` for the
tiny version, ``--only outbound,inbound`` for some, ``--results PATH`` elsewhere)."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.servers.dirs import ServerDirs

from . import empty, inbound, listener, outbound, pg_workers, process, scaling, submit
from .common import Section, Sizes

BENCHMARKS: dict[str, Callable[[Sizes, ServerDirs], Section]] = {
    "outbound": outbound.run,
    "inbound": inbound.run,
    "submit": submit.run,
    "scaling": scaling.run,
    "empty": empty.run,
    "process": process.run,
    "listener": listener.run,
    "pg": pg_workers.run,
}
HERE = Path(__file__).resolve().parent
ANALYSIS = HERE / "analysis.md"


def render(sections: Sequence[Section], sizes: Sizes, command: str, took: float) -> str:
    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` in {took:.0f} s on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}); "
        f"every comparison ran interleaved (A, B, A, B, ...) {sizes.runs} times. A ratio is "
        "the median of the per-pair throughput ratios (higher is better for mapispool), "
        "and min..max is their spread; a time is the median of its runs. Absolute numbers "
        "are context only (shared, noisy 2-core machine).",
        "",
        "## Targets",
        "",
        "| target | ratio (min..max) | pairs | goal | verdict |",
        "|---|---|---|---|---|",
    ]
    for section in sections:
        for t in section.targets:
            r = t.ratio
            shown = f"{r:.2f}x ({t.spread})" if r is not None else "-"
            out.append(f"| {t.label} | {shown} | {t.pairs} | ≥{t.goal}x | {t.verdict} |")
        for c in section.checks:
            out.append(f"| {c.label} | {c.shown} | - | {c.goal} | {c.verdict} |")
    for section in sections:
        out += ["", f"## {section.title}", ""]
        out += ["| case | N | median s | msg/s | ratio (min..max) | notes |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for row in section.rows:
            out.append("| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |")
        for note in section.notes:
            out += ["", note]
    if ANALYSIS.exists():
        out += ["", ANALYSIS.read_text().rstrip()]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> list[Section]:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-results", action="store_true", help="print only")
    args = parser.parse_args(argv)
    sizes = Sizes.from_env(smoke=args.smoke)
    chosen = [b for b in args.only.split(",") if b] or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    dirs = ServerDirs()
    started = time.monotonic()
    sections = []
    try:
        for name in chosen:
            sections.append(BENCHMARKS[name](sizes, dirs))
    finally:
        dirs.remove()
    took = time.monotonic() - started
    if not args.no_results:
        command = "scripts/bench" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
        args.results.write_text(render(sections, sizes, command.strip(), took))
        print(f"wrote {args.results}")
    return sections


if __name__ == "__main__":
    main()
