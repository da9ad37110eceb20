"""The ``mapispool`` command group: global options, error handling, subcommands."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from ..mapi import MapiError
from ..session import default_profile_path
from .context import Cli, make_console
from .errors import describe, exit_code

EPILOG = """\b
Examples:
  mapispool demo                       try it without a mail account
  mapispool init --template smtp-imap  write a profile
  mapispool submit message.eml         queue a message
  mapispool flush                      Send/Receive every transport
  mapispool status                     the status table
  mapispool queue list                 what is waiting to be sent
  mapispool serve                      run the spooler as a daemon
"""


def _version() -> str:
    try:
        return version("mapispool")
    except PackageNotFoundError:
        return "unknown"


class Group(click.Group):
    """Turns a ``MapiError`` (a ``ProfileError`` too) into one line on stderr and an exit
    code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MapiError as exc:
            cli = ctx.find_object(Cli)
            verbose = cli.verbose if cli is not None else False
            make_console(stderr=True).print(
                f"mapispool: error: {describe(exc, verbose=verbose)}", markup=False
            )
            ctx.exit(exit_code(exc))


@click.group(cls=Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The profile file (default: $MAPISPOOL_PROFILE or the user config directory).",
)
@click.option("-v", "--verbose", is_flag=True, help="Say more (error codes, debug logs).")
@click.option("-q", "--quiet", is_flag=True, help="Say only what was asked for.")
@click.version_option(_version(), "-V", "--version", prog_name="mapispool")
@click.pass_context
def cli(ctx: click.Context, profile_path: Path | None, verbose: bool, quiet: bool) -> None:
    """mapispool: the MAPI spooler. A durable outgoing queue, pluggable transports and
    Send/Receive (FlushQueues)."""
    ctx.obj = Cli(profile_path or default_profile_path(), verbose=verbose, quiet=quiet)


def _register() -> None:
    from . import demo, flush, folder, init, queue, sendmail, serve, status, submit

    for command in (
        demo.demo,
        flush.flush,
        submit.submit,
        sendmail.sendmail,
        status.status,
        queue.queue,
        folder.folder,
        init.init,
        serve.serve,
    ):
        cli.add_command(command)


_register()


def main() -> None:
    """Entry point of the ``mapispool`` script."""
    cli(prog_name="mapispool")
