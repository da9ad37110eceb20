"""``mapispool init``: write a profile from flags, or by asking on a terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..profile import Profile
from .context import Cli, pass_cli

TEMPLATES = ("smtp-imap", "maildir")


def _q(value: str) -> str:
    """A TOML basic string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(template: str, values: dict[str, str]) -> str:
    """The profile text for ``template`` filled with ``values``."""
    lines = ["# mapispool profile (see the README); secrets by reference, never inline."]
    if values.get("store"):
        lines.append(f"store = {_q(values['store'])}")
    for key in ("store_schema", "store_password_env"):
        if values.get(key):
            lines.append(f"{key} = {_q(values[key])}")
    lines.append("send_immediately = true")
    if template == "smtp-imap":
        lines += [
            "",
            "[transports.smtp]",
            'provider = "smtp"',
            f"host = {_q(values['smtp_host'])}",
            f"port = {int(values['smtp_port'])}",
            f"username = {_q(values['username'])}",
            f"password_env = {_q(values['password_env'])}",
            "",
            "[transports.imap]",
            'provider = "imap"',
            f"host = {_q(values['imap_host'])}",
            f"username = {_q(values['username'])}",
            f"password_env = {_q(values['password_env'])}",
        ]
    else:
        lines += [
            "",
            "[transports.maildir]",
            'provider = "maildir"',
            f"path = {_q(values['maildir'])}",
            "create = true",
        ]
    return "\n".join(lines) + "\n"


def absolute_store(store: str) -> str:
    """A store path typed on the command line is relative to the current directory, as
    every path argument is; the profile reads relative paths against its own directory,
    so it gets the absolute path (``init --store u1/x.db --profile u1/p.toml`` must not
    make ``u1/u1/x.db``). URLs (``sqlite:///...``, other schemes) are kept as written."""
    if "://" in store:
        return store
    return str(Path(store).expanduser().resolve())


def write_private(path: Path, text: str, force: bool) -> None:
    """Create ``path`` with mode 0600 (it may name secrets' sources); refuse to overwrite
    unless ``force``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


@click.command(
    epilog="\b\nExamples:\n  mapispool init --template smtp-imap --smtp-host smtp.example.com"
    " --imap-host imap.example.com --username me@example.com\n"
    "  mapispool --profile ./p.toml init --template maildir --maildir ~/Maildir\n"
    "  mapispool init --store postgresql://mapispool@db.example.com/mail"
    " --template maildir --maildir ~/Maildir"
)
@click.option("--template", type=click.Choice(TEMPLATES), default=None, help="Profile shape.")
@click.option("--smtp-host", help="SMTP server (smtp-imap).")
@click.option("--smtp-port", default=None, type=int, help="SMTP port (default 587).")
@click.option("--imap-host", help="IMAP server (smtp-imap).")
@click.option("--username", help="Account user name (smtp-imap).")
@click.option("--password-env", help="Environment variable holding the password.")
@click.option("--maildir", help="The Maildir to receive from (maildir).")
@click.option(
    "--store",
    help="Where the store lives: a path, sqlite:///PATH, or postgresql://USER@HOST:PORT/DB"
    " for many workers (default: the user data directory).",
)
@click.option("--store-schema", help="The PostgreSQL schema of the store (default: mapispool).")
@click.option(
    "--store-password-env",
    help="Environment variable holding the PostgreSQL password (else PGPASSWORD/.pgpass).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing profile.")
@pass_cli
def init(
    cli: Cli,
    template: str | None,
    smtp_host: str | None,
    smtp_port: int | None,
    imap_host: str | None,
    username: str | None,
    password_env: str | None,
    maildir: str | None,
    store: str | None,
    store_schema: str | None,
    store_password_env: str | None,
    force: bool,
) -> None:
    """Write a profile (mode 0600) at --profile or the default location."""
    path = cli.profile_path
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it")
    interactive = sys.stdin.isatty()

    def need(value: str | None, prompt: str, default: str | None = None) -> str:
        if value:
            return value
        if not interactive:
            raise click.UsageError(f"missing --{prompt.lower().replace(' ', '-')}")
        return str(click.prompt(prompt, default=default))

    if template is None:
        template = (
            str(click.prompt("Template", type=click.Choice(TEMPLATES), default="smtp-imap"))
            if interactive
            else "smtp-imap"
        )
    values = {
        "store": absolute_store(store) if store else "",
        "store_schema": store_schema or "",
        "store_password_env": store_password_env or "",
    }
    if template == "smtp-imap":
        values["smtp_host"] = need(smtp_host, "SMTP host")
        values["smtp_port"] = str(smtp_port or 587)
        values["imap_host"] = need(imap_host, "IMAP host")
        values["username"] = need(username, "Username")
        values["password_env"] = password_env or "MAPISPOOL_PASSWORD"
    else:
        values["maildir"] = need(maildir, "Maildir", "~/Maildir")
    text = render(template, values)
    Profile.from_toml(text, source=str(path))  # never write a profile that cannot load
    write_private(path, text, force)
    cli.say(f"wrote {path} (mode 0600)")
    if template == "smtp-imap":
        cli.say(f"set ${values['password_env']} to your password before 'mapispool flush'")
