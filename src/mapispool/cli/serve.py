"""``mapispool serve``: the spooler daemon."""

from __future__ import annotations

import asyncio

import click

from ..daemon.logs import EventLog, install
from ..daemon.server import serve as run_daemon
from ..web.companions import web_companions
from .context import Cli, pass_cli


@click.command(
    epilog="\b\nExamples:\n  mapispool serve\n  mapispool serve --log-format json"
    "\n  mapispool serve --web 127.0.0.1:8025   (the web page and /metrics)"
    "\n  mapispool serve --worker relay-a   (a PostgreSQL store)"
    "\n  kill -USR1 <pid>   (Send/Receive now)"
)
@click.option(
    "--log-format",
    type=click.Choice(["kv", "json"]),
    default="kv",
    show_default=True,
    help="Log lines on stderr as key=value pairs or JSON objects.",
)
@click.option(
    "--smtp",
    metavar="HOST:PORT",
    default=None,
    help="Also accept mail over SMTP here (overrides [listen] smtp), e.g. 127.0.0.1:2525.",
)
@click.option(
    "--web",
    "web_listen",
    metavar="HOST:PORT",
    help="Serve the web page, the HTTP API and /metrics there (overrides [web] listen).",
)
@click.option(
    "--worker",
    metavar="NAME",
    default="",
    help="This worker's name on a PostgreSQL store that many workers share "
    "(default host:pid); unique among the live workers.",
)
@pass_cli
def serve(cli: Cli, log_format: str, smtp: str | None, web_listen: str | None, worker: str) -> None:
    """Run the spooler until SIGTERM/SIGINT: send as messages arrive, poll, Send/Receive
    every flush_every minutes and on SIGUSR1. Other mapispool commands on the same
    store talk to it through a control socket next to the store file. On a PostgreSQL
    store any number of workers share the queue; commands work on the database."""
    events = EventLog(log_format)
    install(events, cli.verbose)
    profile = cli.profile
    from .sendmail_served import sendmail_handoff

    companions = [*web_companions(profile, web_listen), sendmail_handoff(profile)]
    asyncio.run(run_daemon(profile, events, smtp, companions, worker))
