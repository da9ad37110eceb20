"""Picking the account by envelope sender: ``senders`` on smtp transports, against two
aiosmtpd servers that each stand for one account's relay."""

from __future__ import annotations

from typing import Any

import pytest

from mapispool.mapi import FLUSH_UPLOAD
from mapispool.profile import Profile
from mapispool.session import AsyncSession
from tests.conftest import StoreBackend
from tests.servers._util import HOST


def _message(sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: bob@example.test\r\nSubject: from {sender}\r\n\r\nhi\r\n"
    ).encode()


def _section(port: int, senders: list[str] | None) -> dict[str, Any]:
    section: dict[str, Any] = {"provider": "smtp", "host": HOST, "port": port, "tls": "none"}
    if senders is not None:
        section["senders"] = senders
    return section


async def _route(
    backend: StoreBackend, sections: dict[str, dict[str, Any]], senders: list[str]
) -> None:
    profile = Profile.from_dict(
        {**backend.options(), "send_immediately": False, "transports": sections}
    )
    session = await AsyncSession.logon(profile, attach=False)
    try:
        for sender in senders:
            await session.submit(_message(sender))
        result = await session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert result.ok, result
    finally:
        await session.logoff()


def _senders_seen(server: Any) -> list[str]:
    return sorted(t.mail_from for t in server.messages)


async def test_the_matching_account_sends_whatever_the_order(
    store_backend: StoreBackend, smtp_server_factory: Any
) -> None:
    """work (first, for *@work.test and one address) and home (no list): each message
    goes out through the account its sender belongs to; an unlisted sender through the
    account without a list, though it comes second."""
    work, home = smtp_server_factory(), smtp_server_factory()
    sections = {
        "work": _section(work.port, ["*@work.test", "me@consulting.test"]),
        "home": _section(home.port, None),
    }
    await _route(
        store_backend, sections,
        ["boss@work.test", "me@home.test", "ME@Consulting.test", "x@sub.work.test"],
    )  # fmt: skip
    assert _senders_seen(work) == ["ME@Consulting.test", "boss@work.test"]
    assert _senders_seen(home) == ["me@home.test", "x@sub.work.test"]


async def test_a_match_beats_transport_order(
    store_backend: StoreBackend, smtp_server_factory: Any
) -> None:
    first, second = smtp_server_factory(), smtp_server_factory()
    sections = {"any": _section(first.port, None), "work": _section(second.port, ["*@work.test"])}
    await _route(store_backend, sections, ["boss@work.test", "me@home.test"])
    assert _senders_seen(first) == ["me@home.test"]
    assert _senders_seen(second) == ["boss@work.test"]


async def test_no_match_falls_back_to_transport_order(
    store_backend: StoreBackend, smtp_server_factory: Any
) -> None:
    first, second = smtp_server_factory(), smtp_server_factory()
    sections = {
        "a": _section(first.port, ["*@a.test"]),
        "b": _section(second.port, ["*@b.test"]),
    }
    await _route(store_backend, sections, ["someone@elsewhere.test", "x@b.test"])
    assert _senders_seen(first) == ["someone@elsewhere.test"]
    assert _senders_seen(second) == ["x@b.test"]


@pytest.mark.parametrize("bad", ["me", "*", "*@", "a@b@c", "me@*.test", 7])
def test_bad_senders_are_refused_at_load(bad: object) -> None:
    with pytest.raises(Exception, match="senders") as info:
        Profile.from_dict({"transports": {"out": {**_section(25, None), "senders": [bad]}}})
    assert "*@domain" in str(info.value)
