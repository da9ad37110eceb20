"""``mapispool demo``: the whole cycle on this machine, with no mail account.

It writes a throwaway profile in a temporary directory: an ``outgoing`` transport that
sends to an SMTP server started in this process (aiosmtpd, when installed; otherwise the
in-memory ``loopback`` post office stands for the outside world) and an ``incoming``
Maildir with two messages waiting. It queues a few messages, runs a Send/Receive with
progress bars, and shows the status table and what arrived where.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..app import LocalBackend
from ..daemon.client import encode_content
from ..profile import Profile
from .context import Cli, make_console
from .progress import FlushBars
from .render import flush_summary, messages_table, status_table

OUTGOING = [
    ("alice@example.test", "Lunch on Friday?"),
    ("bob@example.test", "The quarterly report"),
    ("carol@example.test", "Re: the garden party"),
]
INCOMING = [
    ("dave@example.test", "Welcome to mapispool"),
    ("erin@example.test", "Your parcel is on its way"),
]


def _message(sender: str, to: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n"
        f"Hello from the mapispool demo: {subject}.\r\n"
    ).encode()


class _Recorder:
    """aiosmtpd handler: remembers each envelope it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], int]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        size = len(envelope.original_content or envelope.content or b"")
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), size))
        return "250 2.0.0 OK: queued by the demo server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _smtp_server() -> Iterator[tuple[int, _Recorder] | None]:
    """An aiosmtpd server on 127.0.0.1, or None when aiosmtpd is not installed."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        yield None
        return
    recorder = _Recorder()
    port = _free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, recorder
    finally:
        controller.stop()


def _profile_text(port: int | None, maildir: Path) -> str:
    if port is not None:
        outgoing = f'provider = "smtp"\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n'
    else:
        outgoing = 'provider = "loopback"\npost_office = "demo"\n'
    return (
        'store = "store.db"\nsend_immediately = false\n'
        'transport_order = ["outgoing", "incoming"]\n\n'
        f"[transports.outgoing]\n{outgoing}\n"
        f'[transports.incoming]\nprovider = "maildir"\npath = "{maildir}"\n'
    )


def _prepare(root: Path) -> Path:
    maildir = root / "incoming"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n, (sender, subject) in enumerate(INCOMING):
        name = f"{int(time.time())}.demo{n}.localhost"
        (maildir / "new" / name).write_bytes(_message(sender, "you@demo.test", subject))
    return maildir


@click.command(epilog="\b\nExample:\n  mapispool demo")
@click.option("--keep", is_flag=True, help="Keep the temporary directory and print its path.")
@click.option("--no-ui", is_flag=True, help="No progress bars.")
def demo(keep: bool, no_ui: bool) -> None:
    """Try mapispool without a mail account: queue, Send/Receive, see what arrived."""
    console = make_console()
    root = Path(tempfile.mkdtemp(prefix="mapispool-demo-"))
    try:
        maildir = _prepare(root)
        with _smtp_server() as server:
            _run(Cli(root / "profile.toml", console=console), root, maildir, server, no_ui)
    finally:
        if keep:
            console.print(f"The demo's files are in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _run(
    cli: Cli, root: Path, maildir: Path, server: tuple[int, _Recorder] | None, no_ui: bool
) -> None:
    console = cli.console
    port = server[0] if server else None
    (root / "profile.toml").write_text(_profile_text(port, maildir), encoding="utf-8")
    backend = LocalBackend(Profile.load(root / "profile.toml"))
    if server:
        console.print(f"[bold]1.[/bold] An SMTP server (aiosmtpd) listens on 127.0.0.1:{port}.")
    else:
        console.print(
            "[bold]1.[/bold] aiosmtpd is not installed, so the in-memory [italic]loopback[/]"
            " transport stands for the outside world (pip install aiosmtpd for a real server)."
        )
    console.print(f"   A Maildir with {len(INCOMING)} new messages stands for your mailbox.")
    console.print(f"[bold]2.[/bold] Queueing {len(OUTGOING)} messages:")
    for to, subject in OUTGOING:
        content = encode_content(_message("you@demo.test", to, subject))
        entry_id = backend.call("submit", {"content": content})
        console.print(f"   {entry_id}  {to:<22} {subject}")
    console.print("[bold]3.[/bold] Send/Receive:")
    if console.is_terminal and not no_ui:
        with FlushBars(console) as bars:
            result = backend.call("flush", {}, progress=bars)
    else:
        result = backend.call("flush", {"no_ui": True})
    console.print(flush_summary(result))
    console.print(status_table(backend.call("status")))
    for folder in ("Sent Items", "Inbox"):
        console.print(messages_table(folder, backend.call("folder_show", {"folder": folder})))
    if server:
        console.print("[bold]The SMTP server received:[/bold]")
        for mail_from, rcpt_tos, size in server[1].envelopes:
            console.print(f"   MAIL FROM:<{mail_from}> RCPT TO:{rcpt_tos} ({size} bytes)")
    else:
        from ..transports.loopback import post_office

        console.print("[bold]The loopback post office holds:[/bold]")
        for address, box in post_office("demo").mailboxes.items():
            console.print(f"   {address}: {len(box)} message(s)")
    console.print("Next: 'mapispool init' writes your own profile; see the README.")
