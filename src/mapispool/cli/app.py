"""The ``mapispool`` command group: global options, error handling, subcommands."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from ..mapi import MapiError
from ..session import default_profile_path
from .context import Cli
from .errors import EX_SOFTWARE, EX_TEMPFAIL, EX_USAGE, describe, exit_code, install_log_handler

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


class SysexitsUsageError(click.UsageError):
    """A command line mistake: exit 64 (EX_USAGE), as every code here is sysexits' (click
    would exit 2)."""

    exit_code = EX_USAGE


class Group(click.Group):
    """Turns a ``MapiError`` (a ``ProfileError`` too) into one line on stderr and an exit
    code, never a traceback. An SQLite error that escaped the store's translation is 75
    (the store, try again later); any other unexpected error is one line and 70, with
    the traceback only under ``-v``."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            if isinstance(exc, SysexitsUsageError):
                raise
            raise SysexitsUsageError(exc.format_message(), exc.ctx) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MapiError as exc:
            _fail(ctx, describe(exc, verbose=_verbose(ctx)), exit_code(exc))
        except click.UsageError as exc:
            if isinstance(exc, SysexitsUsageError):
                raise
            raise SysexitsUsageError(exc.format_message(), exc.ctx) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except sqlite3.Error as exc:
            _fail(ctx, f"the store: {exc}; try again later", EX_TEMPFAIL)
        except Exception as exc:
            if _verbose(ctx):
                raise
            _fail(ctx, f"internal error: {exc!r} (run with -v for the traceback)", EX_SOFTWARE)


def _verbose(ctx: click.Context) -> bool:
    cli = ctx.find_object(Cli)
    return cli.verbose if cli is not None else False


def _fail(ctx: click.Context, text: str, code: int) -> None:
    # click.echo, not the rich console: one line whatever the width (a pipe, a log).
    click.echo(f"mapispool: error: {' '.join(text.split())}", err=True)
    ctx.exit(code)


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
    ctx.obj = cli_obj = Cli(profile_path or default_profile_path(), verbose=verbose, quiet=quiet)
    install_log_handler(lambda: cli_obj.verbose)


def _set_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def set_it(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        cli = ctx.find_object(Cli)
        if value and cli is not None:
            setattr(cli, name, True)

    return set_it


def add_verbosity_options(command: click.Command) -> None:
    """Accept ``-v/--verbose`` and ``-q/--quiet`` after the subcommand as well as before
    it (``mapispool serve -v``), on every command but ``sendmail``, whose flags are
    sendmail's."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_verbosity_options(sub)
        return
    if command.name == "sendmail":
        return
    taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
    for short, long, text in (
        ("-v", "--verbose", "Say more (error codes, debug logs)."),
        ("-q", "--quiet", "Say only what was asked for."),
    ):
        if short not in taken and long not in taken:
            option = click.Option(
                [short, long], is_flag=True, expose_value=False, help=text,
                callback=_set_flag(long[2:]),
            )  # fmt: skip
            command.params.append(option)


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
        add_verbosity_options(command)
        cli.add_command(command)


_register()


def main() -> None:
    """Entry point of the ``mapispool`` script."""
    cli(prog_name="mapispool")
