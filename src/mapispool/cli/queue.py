"""``mapispool queue``: list and manage the outgoing queue."""

from __future__ import annotations

import json

import click

from ..store.model import QueueState
from ..store.types import QUEUE_ACTIONS, QueueAction
from .context import Cli, pass_cli
from .render import queue_table, when


@click.group(
    epilog="\b\nExamples:\n  mapispool queue list --json\n  mapispool queue hold 3fa2"
    "\n  mapispool queue retry 3fa2c81e"
)
def queue() -> None:
    """The outgoing queue. Entry ids are hex; a unique prefix is enough."""


@queue.command("list")
@click.option("--all", "all_", is_flag=True, help="Include sent, failed and cancelled ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_cli
def list_(cli: Cli, all_: bool, as_json: bool) -> None:
    """Every message not yet finished (queued, deferred, retrying, held, uncertain)."""
    entries = cli.backend().call("queue_list", {"all": all_})
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    elif entries:
        cli.console.print(queue_table(entries))
    else:
        cli.say("The outgoing queue is empty.")


@queue.command()
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_cli
def show(cli: Cli, entry_id: str, as_json: bool) -> None:
    """One queued message and its history."""
    info = cli.backend().call("queue_show", {"entry_id": entry_id})
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key in ("entry_id", "state", "subject", "recipients", "attempts", "last_error"):
        value = info[key]
        if isinstance(value, list):
            value = ", ".join(value)
        cli.console.print(f"[bold]{key:>11}[/bold]  {value if value is not None else ''}")
    for key in ("submit_time", "not_before", "expires_at"):
        cli.console.print(f"[bold]{key:>11}[/bold]  {when(info[key])}")
    for event in info["events"]:
        where = f" [{event['transport']}]" if event["transport"] else ""
        detail = f": {event['detail']}" if event["detail"] else ""
        cli.console.print(f"  {when(event['at'])} {event['kind']}{where}{detail}", markup=False)


def _action(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("entry_ids", nargs=-1, required=True, metavar="ENTRY_ID...")
    @pass_cli
    def command(cli: Cli, entry_ids: tuple[str, ...]) -> None:
        backend = cli.backend()
        for entry_id in entry_ids:
            done = backend.call("queue_action", {"action": name, "entry_id": entry_id})
            cli.say(f"{name}: {done['entry_id']}")

    return command


def _retry_help() -> str:
    """The help of ``queue retry``, naming the states it applies to from the one table
    of queue actions (so the help cannot fall behind it)."""
    starts = QUEUE_ACTIONS[QueueAction.RETRY][0]
    states = [s.value.replace("_", " ") for s in QueueState if s in starts]
    listed = ", ".join(states[:-1]) + f" or {states[-1]}" if len(states) > 1 else states[0]
    renewed = " (a failed one gets a new lifetime)" if QueueState.FAILED in starts else ""
    return f"Send again now messages in state {listed}{renewed}."


for _name, _help in (
    ("cancel", "Cancel queued messages (they go to Deleted Items)."),
    ("hold", "Keep messages from being sent until released."),
    ("release", "Let held messages go again."),
    ("retry", _retry_help()),
    ("purge", "Delete messages for good (not while being sent)."),
):
    queue.add_command(_action(_name, _help))
