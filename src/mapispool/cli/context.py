"""What every command shares: the profile path, verbosity, the console and the backend."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console

from ..app import Backend
from ..daemon.client import connect
from ..profile import Profile

#: Width used when stdout is not a terminal, so that piped tables are not cut at 80.
PIPE_WIDTH = 160


def make_console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(file=stream, width=width, soft_wrap=False, highlight=False)


@dataclass
class Cli:
    """The global options, resolved lazily (``mapispool init`` has no profile yet)."""

    profile_path: Path
    verbose: bool = False
    quiet: bool = False
    console: Console = field(default_factory=make_console)
    _profile: Profile | None = None

    @property
    def profile(self) -> Profile:
        if self._profile is None:
            self._profile = Profile.load(self.profile_path)
        return self._profile

    def backend(self) -> Backend:
        """The daemon of the store when one of ours runs, else this process."""
        return connect(self.profile, self.warn)

    def warn(self, text: str) -> None:
        """A warning on stderr (shown even with --quiet)."""
        click.echo(f"warning: {text}", err=True)

    def say(self, text: str) -> None:
        """A line of chatter, left out with --quiet."""
        if not self.quiet:
            self.console.print(text)


pass_cli = click.make_pass_decorator(Cli)
