"""``mapispool flush``: Send/Receive (IMAPIStatus::FlushQueues on the spooler's object)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..mapi import MAPI_E_BUSY, MapiError
from .context import Cli, pass_cli
from .errors import EX_FAILURES, EX_TEMPFAIL
from .flush_report import problems, waiting_for_retry, waiting_line
from .progress import FlushBars
from .render import flush_summary

BUSY = "a Send/Receive is already running; use --wait to wait for it"


@click.command(
    epilog="\b\nExamples:\n  mapispool flush\n  mapispool flush --upload --transport work-smtp"
    "\n  mapispool flush --force --no-ui   (from cron)"
)
@click.option("--upload", is_flag=True, help="Send only (FLUSH_UPLOAD).")
@click.option("--download", is_flag=True, help="Receive only (FLUSH_DOWNLOAD).")
@click.option("--transport", "transport", metavar="NAME", help="Flush only this transport.")
@click.option("--force", is_flag=True, help="Ignore retry backoff, hold times and offline.")
@click.option("--no-ui", is_flag=True, help="No progress bars (FLUSH_NO_UI).")
@click.option("--async", "async_", is_flag=True, help="Start it and return (FLUSH_ASYNC_OK).")
@click.option("--wait", is_flag=True, help="Wait for a running Send/Receive, then run.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_cli
def flush(
    cli: Cli,
    upload: bool,
    download: bool,
    transport: str | None,
    force: bool,
    no_ui: bool,
    async_: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Send/Receive: flush the outgoing queue and fetch new mail, transport by transport
    in transport order. Exits 1 when a message failed or became uncertain, or a
    transport failed (wrong password, TLS); says why a transport was skipped or offline
    and how many messages wait for a retry."""
    params: dict[str, Any] = {
        "upload": upload,
        "download": download,
        "transport": transport,
        "force": force,
        "no_ui": no_ui,
        "async": async_,
        "wait": wait,
    }
    backend = cli.backend()
    show_bars = not (no_ui or as_json or cli.quiet) and cli.console.is_terminal
    try:
        if show_bars:
            with FlushBars(cli.console) as bars:
                result = backend.call("flush", params, progress=bars)
        else:
            result = backend.call("flush", params)
    except MapiError as exc:
        if exc.hresult == MAPI_E_BUSY:
            click.echo(f"mapispool: {BUSY}", err=True)
            raise SystemExit(EX_TEMPFAIL) from exc
        raise
    if isinstance(result, dict) and result.get("async_started"):
        cli.say("Send/Receive started; the daemon runs it (see 'mapispool status').")
        return
    waiting = None if force else waiting_for_retry(backend.call("queue_list", {}))
    if as_json:
        click.echo(json.dumps(dict(result, waiting_retry=waiting), indent=2))
    else:
        if not cli.quiet:
            cli.console.print(flush_summary(result))
        # The reasons go to stderr as well: a log or cron mail shows why, table or not.
        for line in problems(result):
            click.echo(f"mapispool: {line}", err=True)
        if waiting is not None:
            click.echo(f"mapispool: {waiting_line(waiting)}", err=True)
    if not result["ok"]:
        raise SystemExit(EX_FAILURES)
