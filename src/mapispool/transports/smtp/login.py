"""Opening an SMTP session's security: the client TLS context and the AUTH exchange
(the SASL responses themselves are built by ``auth``). Split from ``connection``."""

from __future__ import annotations

import ssl

from aiosmtplib import SMTP, SMTPResponseException

from .auth import (
    ERROR_CHALLENGE_ANSWER,
    Mechanism,
    login_responses,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)
from .errors import misconfigured
from .outcome import Reply
from .replies import is_closing
from .reply_text import clean_reply
from .secrets import Redactor
from .settings import SmtpSettings


def build_tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The client TLS context: system CAs or ``ca_file``; hostname checked unless
    ``verify = false``. Raises ``SmtpError`` when ``ca_file`` cannot be loaded."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise misconfigured(
            f"ca_file: cannot load {settings.ca_file!r} ({exc}); point it at a PEM file"
        ) from exc
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def auth_exchange(
    client: SMTP,
    mechanism: Mechanism,
    username: str,
    secret: str,
    server: tuple[str, int],
    redactor: Redactor,
) -> Reply:
    """Run AUTH with ``mechanism`` on ``client`` and return the final reply, its text
    redacted (a server may echo the secret)."""
    name = mechanism.value.encode()
    password = b""
    if mechanism is Mechanism.PLAIN:
        first = plain_response(username, secret)
    elif mechanism is Mechanism.LOGIN:
        first, password = login_responses(username, secret)
    elif mechanism is Mechanism.XOAUTH2:
        first = xoauth2_response(username, secret)
    else:
        first = oauthbearer_response(username, secret, *server)
    response = await client.execute_command(b"AUTH", name, first)
    if response.code == 334 and mechanism is Mechanism.LOGIN:
        response = await client.execute_command(password)
    elif response.code == 334 and mechanism.uses_token:
        # The 334 carries the server's JSON error; answering it yields the final reply.
        response = await client.execute_command(ERROR_CHALLENGE_ANSWER[mechanism])
    return Reply(response.code, redactor.text(clean_reply(response.message)))


async def greet(client: SMTP) -> None:
    """EHLO, or HELO for an old server without ESMTP (no extensions then)."""
    try:
        await client.ehlo()
    except SMTPResponseException as exc:
        if is_closing(exc.code) or not client.is_connected:
            raise
        await client.helo()


async def starttls(client: SMTP, settings: SmtpSettings, context: ssl.SSLContext | None) -> None:
    """STARTTLS, then greet again; a server that does not offer it is a settings error."""
    if not client.supports_extension("starttls"):
        raise misconfigured(
            f"{settings.host}:{settings.port} does not offer STARTTLS; "
            'use tls = "implicit" if it is an SMTPS port, or tls = "none" only on a '
            "trusted network"
        )
    await client.starttls(server_hostname=settings.host, tls_context=context)
    await greet(client)
