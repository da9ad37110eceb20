"""``mapispool folder``: the store's folders (Outbox, Inbox, Sent Items, Deleted Items)."""

from __future__ import annotations

import base64
import json
import sys

import click

from .context import Cli, pass_cli
from .render import folders_table, messages_table


@click.group(
    epilog="\b\nExamples:\n  mapispool folder list\n  mapispool folder show Inbox --json"
    "\n  mapispool folder show 'Sent Items' 9c01   (one message, with its content)"
    "\n  mapispool folder show Inbox 9c01 --raw > message.eml"
)
def folder() -> None:
    """The folders of the store and their messages."""


@folder.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_cli
def list_(cli: Cli, as_json: bool) -> None:
    """Every folder with its message count."""
    folders = cli.backend().call("folder_list")
    if as_json:
        click.echo(json.dumps(folders, indent=2))
    else:
        cli.console.print(folders_table(folders))


@folder.command()
@click.argument("name")
@click.argument("entry_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--raw", is_flag=True, help="Write the message's exact bytes (with ENTRY_ID).")
@pass_cli
def show(cli: Cli, name: str, entry_id: str | None, as_json: bool, raw: bool) -> None:
    """The messages in folder NAME; with ENTRY_ID (a hex prefix) that message in full:
    its exact bytes with --raw or when stdout is not a terminal (a file, a pipe), else
    as text (bytes that are not UTF-8 shown as U+FFFD)."""
    answer = cli.backend().call("folder_show", {"folder": name, "entry_id": entry_id})
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    elif entry_id and (raw or not sys.stdout.isatty()):
        out = sys.stdout.buffer
        out.write(base64.b64decode(answer["content_base64"]))
        out.flush()
    elif entry_id:
        click.echo(answer["content"], nl=False)
    else:
        cli.console.print(messages_table(name, answer))
