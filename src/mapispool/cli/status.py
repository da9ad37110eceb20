"""``mapispool status``: the status table (IMAPISession::GetStatusTable)."""

from __future__ import annotations

import json
import time

import click
from rich.live import Live

from .context import Cli, pass_cli
from .render import status_table


@click.command(
    epilog="\b\nExamples:\n  mapispool status\n  mapispool status --json | jq '.[1].status_bits'"
    "\n  mapispool status --watch"
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@pass_cli
def status(cli: Cli, as_json: bool, watch: bool, interval: float) -> None:
    """Show every status row: the spooler's, then one per transport, with the
    PR_STATUS_CODE bits spelled out."""
    backend = cli.backend()
    # In this process the transports have just logged on and have not talked to their
    # servers: they check now, so that a wrong password is not shown as Available.
    params = {"validate": backend.kind == "local"}
    rows = backend.call("status", params)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not watch:
        cli.console.print(status_table(rows))
        return
    with Live(status_table(rows), console=cli.console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(status_table(backend.call("status", params)), refresh=True)
        except KeyboardInterrupt:
            pass
