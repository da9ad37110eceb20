"""``SmtpProvider``: the IXPProvider of the smtp transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...mapi import MAPI_E_FAILONEPROVIDER, MapiError
from ...spi import Support, TransportLogon, TransportProvider
from .logon import SmtpLogon
from .settings import parse_settings


class SmtpProvider(TransportProvider):
    """Sends mail to an SMTP server (submission on 587, SMTPS on 465, or relay on 25).

    Settings are those of ``SmtpSettings``; see the README (Transports, smtp).
    """

    logon_class = SmtpLogon

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Validate the section; raises ``ValueError`` naming the key and the fix."""
        parse_settings(settings)

    async def transport_logon(self, support: Support, flags: int) -> TransportLogon:
        """Return an ``SmtpLogon``; no connection is made until the first message or
        ``validate_state``. Warns in the log about insecure settings the profile chose."""
        try:
            settings = parse_settings(self.settings)
        except ValueError as exc:
            raise MapiError(MAPI_E_FAILONEPROVIDER, str(exc)) from exc
        if not settings.verify and settings.tls != "none":
            support.logger.warning(
                "verify = false: the certificate of %s is not checked; anyone on the path "
                "can read the mail and the credentials",
                settings.host,
            )
        if settings.password is not None:
            support.logger.warning(
                "the password is written inline in the profile; prefer password_env, "
                "password_file or password_command"
            )
        return SmtpLogon(support, settings)
