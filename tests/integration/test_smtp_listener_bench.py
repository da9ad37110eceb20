"""The listener benchmark (bench/listener.py) in its tiny version: smtp-source into
``mapispool serve --smtp`` and into Postfix, interleaved; nothing here is timed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench import listener
from bench.common import Sizes

from tests.servers._util import in_ci, need, need_root
from tests.servers.dirs import ServerDirs


@pytest.fixture
def bench_dirs() -> Iterator[ServerDirs]:
    dirs = ServerDirs()
    yield dirs
    dirs.remove()


def test_listener_bench_prints_its_ratio_to_postfix(
    bench_dirs: ServerDirs, capsys: pytest.CaptureFixture[str]
) -> None:
    need("postfix")
    need("smtp-source")
    need_root("Postfix")
    section = listener.run(Sizes.smoke_sizes(), bench_dirs)
    printed = capsys.readouterr().out
    skipped = [row.name for row in section.rows if row.note.startswith("skipped")]
    if in_ci():
        assert not skipped, printed
    assert [t.label for t in section.targets] == ["listener / Postfix smtpd, accepted durably"]
    assert section.targets[0].ratio is not None
    assert "x (" in printed
