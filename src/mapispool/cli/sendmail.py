"""``mapispool sendmail``: the click command in front of ``sendmail_run`` (which the
``mapispool-sendmail`` script, ``sendmail_client``, runs too when no daemon takes the
invocation; this command always runs it in its own process). See ``sendmail_run`` for
the modes and exit codes and ``sendmail_args`` for the flags."""

from __future__ import annotations

import sys

import click

from .sendmail_run import run


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    epilog="\b\nExamples:\n  mapispool sendmail -t < message.eml\n"
    "  mapispool sendmail -odi bob@example.com < note.eml   (deliver now: 0, 75 or 69)\n"
    "  mapispool sendmail -bp   (the queue, as mailq)\n"
    "  mapispool sendmail -q    (run the queue)\n"
    "  git config sendemail.sendmailcmd 'mapispool sendmail'\n"
    '  set sendmail = "mapispool sendmail"   (muttrc)',
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def sendmail(ctx: click.Context, args: tuple[str, ...]) -> None:
    """A sendmail-compatible way in: -t, -i/-oi, -f SENDER, -F NAME, recipients as
    arguments, the message on stdin; -odb/-odi/-odq (deliver in the background, now, or
    only queue), -bp (list the queue), -q (run the queue). Other sendmail flags are
    accepted and ignored."""
    from .context import Cli

    cli = ctx.find_object(Cli)
    ctx.exit(run(args, sys.stdin.buffer, cli.profile_path if cli else None))
