"""The response bounds of the inbound transports on their own: ``Budget`` arithmetic with
a controlled clock, ``BoundedReader`` over a real socket pair, and the settings."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mapispool.transports._inbound import limits as limits_module
from mapispool.transports._inbound.limits import BoundedReader, Budget, LimitExceeded, Limits
from mapispool.transports.imap import ImapSettings
from mapispool.transports.pop3 import Pop3Settings

BASE: dict[str, Any] = {"host": "mail.example.test", "username": "me", "password_file": "/pw"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limits_module.time, "monotonic", fake)
    return fake


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_lines_are_counted_and_capped() -> None:
    budget = Budget(Limits(max_response_lines=3))
    budget.arm("listing")
    for _ in range(3):
        budget.charge_line(10)
    with pytest.raises(LimitExceeded) as raised:
        budget.charge_line(10)
    assert raised.value.setting == "max_response_lines"
    assert "more than 3 lines listing" in str(raised.value)


def test_body_lines_count_bytes_only() -> None:
    budget = Budget(Limits(max_response_lines=3, max_message_size=100, max_response_bytes=10))
    budget.arm("downloading", body=True)
    for _ in range(50):
        budget.charge_line(2, in_body=True)
    with pytest.raises(LimitExceeded, match="more than 110 bytes"):
        budget.charge_line(11, in_body=True)


def test_a_literal_over_max_message_size_is_refused_before_reading() -> None:
    budget = Budget(Limits(max_message_size=1000))
    budget.arm("downloading", body=True, extra_bytes=5000)
    with pytest.raises(LimitExceeded) as raised:
        budget.charge_literal(1001)
    assert raised.value.setting == "max_message_size"
    assert budget.received == 0


def test_the_deadline_grows_with_what_arrived(clock: Clock) -> None:
    """timeout seconds, plus timeout for every 64 KiB received."""
    budget = Budget(Limits(timeout=10.0))
    budget.arm("selecting")
    clock.now += 9.5
    budget.check_time()
    budget.count(64 * 1024)
    clock.now += 10.0
    budget.check_time()
    clock.now += 1.0
    with pytest.raises(LimitExceeded) as raised:
        budget.check_time()
    assert raised.value.timed_out
    assert raised.value.setting == "timeout"


def test_arm_starts_a_fresh_budget(clock: Clock) -> None:
    budget = Budget(Limits(timeout=1.0, max_response_lines=2))
    budget.arm("one")
    budget.charge_line(1)
    budget.charge_line(1)
    clock.now += 5
    budget.arm("two")
    budget.charge_line(1)
    budget.check_time()


def test_reader_reads_lines_and_literals(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    reader = BoundedReader(lambda: a, Budget(Limits()))
    b.sendall(b"* 1 FETCH {5}\r\nhello)\r\nlast")
    b.shutdown(socket.SHUT_WR)
    assert reader.readline() == b"* 1 FETCH {5}\r\n"
    assert reader.read(5) == b"hello"
    assert reader.readline() == b")\r\n"
    assert reader.readline() == b"last"
    assert reader.readline() == b""


def test_reader_refuses_an_endless_line(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    budget = Budget(Limits(max_response_bytes=64 * 1024))
    budget.arm("greeting")
    reader = BoundedReader(lambda: a, budget)
    b.sendall(b"x" * (80 * 1024))
    with pytest.raises(LimitExceeded, match="longer than 65536 bytes greeting"):
        reader.readline()


def test_reader_forgets_bytes_sent_before_the_socket_changed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """After STARTTLS the socket object changes: clear-text bytes the server sent after
    its STARTTLS reply (an injection) must not be read as the protected session's."""
    a, b = pair
    c, d = socket.socketpair()
    try:
        current = [a]
        reader = BoundedReader(lambda: current[0], Budget(Limits()))
        b.sendall(b"T1 OK begin TLS\r\n* injected CAPABILITY\r\n")
        assert reader.readline() == b"T1 OK begin TLS\r\n"
        current[0] = c
        d.sendall(b"* CAPABILITY IMAP4rev1\r\n")
        assert reader.readline() == b"* CAPABILITY IMAP4rev1\r\n"
    finally:
        c.close()
        d.close()


def test_reader_keeps_a_non_blocking_socket_non_blocking(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """imapclient's IDLE check reads a non-blocking socket until it would block."""
    a, b = pair
    a.setblocking(False)
    reader = BoundedReader(lambda: a, Budget(Limits()))
    b.sendall(b"* 3 EXISTS\r\n")
    select.select([a], [], [], 5)
    assert reader.readline() == b"* 3 EXISTS\r\n"
    with pytest.raises(BlockingIOError):
        reader.readline()
    assert a.gettimeout() == 0.0


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"max_message_size": 0}, "max_message_size"),
        ({"max_response_bytes": 1000}, "max_response_bytes"),
        ({"max_response_lines": 5}, "max_response_lines"),
        ({"max_response_lines": "many"}, "max_response_lines"),
    ],
)
def test_bad_limits_name_the_key(over: dict[str, Any], key: str) -> None:
    for parse in (ImapSettings.parse, Pop3Settings.parse):
        with pytest.raises(ValueError, match=key):
            parse({**BASE, **over})


def test_limits_have_defaults_and_follow_the_settings() -> None:
    limits = ImapSettings.parse(BASE).common.limits
    assert limits == Limits(64 * 1024 * 1024, 16 * 1024 * 1024, 500_000, 60.0)
    tuned = ImapSettings.parse({**BASE, "max_message_size": 10, "timeout": 5}).common.limits
    assert (tuned.max_message_size, tuned.timeout) == (10, 5.0)


def test_pop3_max_size_is_the_older_name_of_max_message_size() -> None:
    assert Pop3Settings.parse({**BASE, "max_size": 2000}).common.max_message_size == 2000
    with pytest.raises(ValueError, match="older name of max_message_size"):
        Pop3Settings.parse({**BASE, "max_size": 2000, "max_message_size": 3000})
