"""Shared inbound helpers: secrets by reference, redaction, error translation, state."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from mapispool.mapi import (
    MAPI_E_LOGON_FAILED,
    MAPI_E_NETWORK_ERROR,
    MAPI_E_TIMEOUT,
    MapiError,
)
from mapispool.transports._inbound import Credentials, redact, translate_error
from mapispool.transports._inbound.secrets import sasl_oauthbearer, sasl_xoauth2
from mapispool.transports.imap import ImapSettings


def creds(**over: Any) -> Credentials:
    raw: dict[str, Any] = {"host": "h", "username": "u", **over}
    return Credentials(ImapSettings.parse(raw).common)


def test_password_from_env_file_and_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each password source is read at call time; files and commands lose the newline."""
    monkeypatch.setenv("PW_TEST", "s3cret")
    assert creds(password_env="PW_TEST").secret() == "s3cret"
    path = tmp_path / "pw"
    path.write_text("fromfile\n")
    assert creds(password_file=str(path)).secret() == "fromfile"
    assert creds(password_command="echo fromcmd; echo extra").secret() == "fromcmd"


def test_missing_secret_names_the_setting_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing secret is MAPI_E_LOGON_FAILED naming the setting."""
    monkeypatch.delenv("PW_ABSENT", raising=False)
    with pytest.raises(MapiError) as caught:
        creds(password_env="PW_ABSENT").secret()
    assert caught.value.hresult == MAPI_E_LOGON_FAILED
    assert "PW_ABSENT" in str(caught.value)
    with pytest.raises(MapiError, match="exited with status 3"):
        creds(password_command="exit 3").secret()


def test_token_callable_is_called_each_time() -> None:
    """token_callable returns a fresh token at each (re)connect."""
    c = creds(auth="oauthbearer", token_callable="os:getcwd")
    assert c.secret() == c.secret()


def test_sasl_initial_responses() -> None:
    """XOAUTH2 and OAUTHBEARER initial responses have the documented framing."""
    assert sasl_xoauth2("u", "t") == b"user=u\x01auth=Bearer t\x01\x01"
    assert (
        sasl_oauthbearer("u", "t", "h", 993)
        == b"n,a=u,\x01host=h\x01port=993\x01auth=Bearer t\x01\x01"
    )


def test_errors_translate_and_redact() -> None:
    """Timeouts, certificate failures and resets become the documented HRESULTs, and a
    secret echoed in a reply is masked."""
    assert translate_error(TimeoutError(), doing="x", where="h:1").hresult == MAPI_E_TIMEOUT
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error = translate_error(cert, doing="connecting", where="h:1")
    assert error.hresult == MAPI_E_NETWORK_ERROR
    assert "ca_file" in str(error)
    reset = translate_error(ConnectionResetError(), doing="x", where="h:1")
    assert reset.hresult == MAPI_E_NETWORK_ERROR
    assert reset.retry_after
    assert redact("bad password hunter2", ["hunter2"]) == "bad password ***"

    class Refused(Exception):
        pass

    login = translate_error(
        Refused("NO hunter2 wrong"),
        doing="logging in",
        where="h:1",
        secrets=["hunter2"],
        auth_errors=(Refused,),
    )
    assert login.hresult == MAPI_E_LOGON_FAILED
    assert login.reply == "NO *** wrong"


def test_state_is_stored_as_json_text() -> None:
    """State goes through Support as one JSON string and reads back as the value."""
    from mapispool.transports._inbound.state import load_state, save_state
    from tests.integration.test_imap_support import MemorySupport

    support = MemorySupport()
    save_state(support, "k", {"a": [1, 2]})
    assert isinstance(json.loads(support.state["k"]), str)
    assert load_state(support, "k") == {"a": [1, 2]}
    assert load_state(support, "missing") is None
