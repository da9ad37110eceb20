"""SASL mechanisms for SMTP AUTH (RFC 4954): choosing one, building its initial response.

Pure functions: no sockets. The connection module sends what these build. Results are
secrets (they embed the password or token); never log them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from enum import Enum

from .._secrets import oauthbearer, xoauth2


class Mechanism(Enum):
    """The SASL mechanisms the transport speaks, by their wire names."""

    PLAIN = "PLAIN"
    LOGIN = "LOGIN"
    XOAUTH2 = "XOAUTH2"
    OAUTHBEARER = "OAUTHBEARER"

    @property
    def uses_token(self) -> bool:
        """True for the OAuth 2.0 bearer-token mechanisms."""
        return self in (Mechanism.XOAUTH2, Mechanism.OAUTHBEARER)


#: Preference order of ``auth = "auto"``: PLAIN is one round trip, LOGIN the fallback for
#: old servers; XOAUTH2 is what the big providers speak, OAUTHBEARER its standard twin.
_PASSWORD_ORDER = (Mechanism.PLAIN, Mechanism.LOGIN)
_TOKEN_ORDER = (Mechanism.XOAUTH2, Mechanism.OAUTHBEARER)


class NoMechanism(ValueError):
    """The server offers no mechanism we may use; the message says what to change."""


def parse_offered(auth_parameter: str) -> frozenset[str]:
    """The mechanism names of an EHLO ``AUTH`` line's parameter, upper-cased."""
    return frozenset(word.upper() for word in auth_parameter.split())


def choose_mechanism(configured: str, offered: Iterable[str], *, have_token: bool) -> Mechanism:
    """The mechanism to use for ``auth = configured`` given the server's EHLO ``AUTH`` list.

    ``configured`` is ``"auto"`` or a mechanism name in lower case. An explicit choice is
    used even if the server does not advertise it (some servers hide mechanisms), except
    that nothing is tried when the server advertises no AUTH at all. ``"auto"`` picks a
    token mechanism when a token source is configured, else a password one. Raises
    ``NoMechanism`` naming the offered mechanisms and the ``auth`` values that would work.
    """
    offered_set = frozenset(name.upper() for name in offered)
    if not offered_set:
        raise NoMechanism(
            "the server does not offer SMTP AUTH on this connection "
            "(check tls: many servers offer AUTH only after STARTTLS)"
        )
    if configured != "auto":
        return Mechanism(configured.upper())
    order = _TOKEN_ORDER if have_token else _PASSWORD_ORDER
    for mechanism in order:
        if mechanism.value in offered_set:
            return mechanism
    wanted = ", ".join(m.value for m in order)
    raise NoMechanism(
        f"the server offers AUTH {' '.join(sorted(offered_set))} but none of {wanted}; "
        'set auth = "plain", "login", "xoauth2" or "oauthbearer" to force one'
    )


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain_response(username: str, password: str) -> bytes:
    """``AUTH PLAIN`` initial response (RFC 4616): base64 of ``\\0user\\0password``."""
    return _b64(b"\0" + username.encode() + b"\0" + password.encode())


def login_responses(username: str, password: str) -> tuple[bytes, bytes]:
    """The two answers of ``AUTH LOGIN``: base64 user name, then base64 password."""
    return _b64(username.encode()), _b64(password.encode())


def xoauth2_response(username: str, token: str) -> bytes:
    """``AUTH XOAUTH2`` initial response: ``user=U^Aauth=Bearer T^A^A`` in base64."""
    return _b64(xoauth2(username, token))


def oauthbearer_response(username: str, token: str, host: str, port: int) -> bytes:
    """``AUTH OAUTHBEARER`` initial client response (RFC 7628 §3.1) in base64."""
    return _b64(oauthbearer(username, token, host, port))


#: What a client answers to a 334 error challenge to get the final failure reply:
#: an empty line for XOAUTH2, a single ^A for OAUTHBEARER (RFC 7628 §3.2.3).
ERROR_CHALLENGE_ANSWER: dict[Mechanism, bytes] = {
    Mechanism.XOAUTH2: b"",
    Mechanism.OAUTHBEARER: _b64(b"\x01"),
}
