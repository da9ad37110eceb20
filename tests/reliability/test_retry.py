"""Retry policy (profile ``[retry]``): backoff with jitter between floor and cap, bounded by
the message lifetime (then an NDR), an optional delay notice, FLUSH_FORCE and
``Session.retry()`` ignoring the backoff, and schedules that survive a restart."""

from __future__ import annotations

import random
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mapispool.mapi import (
    FLUSH_FORCE,
    FLUSH_UPLOAD,
    MAPI_E_NETWORK_ERROR,
    PR_MESSAGE_CLASS,
)
from mapispool.profile import Profile, RetryConfig
from mapispool.session import Session
from mapispool.spooler.retry import RetryPolicy
from mapispool.store import QueueState
from mapispool.testing import Raise, TransportScript
from tests.conftest import StoreBackend

MESSAGE = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: flaky\r\n\r\nhi\r\n"


def profile(backend: StoreBackend, script: TransportScript, **retry: Any) -> Profile:
    return Profile.from_dict(
        {
            **backend.options(),
            "send_immediately": False,
            "retry": {"floor": 60, "cap": 600, **retry},
            "transports": {"a": {"provider": "recording", "script": script}},
        }
    )


def failing(times: int) -> TransportScript:
    script = TransportScript()
    script.on("flaky", *[Raise(MAPI_E_NETWORK_ERROR, message="connection refused")] * times)
    return script


@given(
    floor=st.floats(0, 1000),
    extra=st.floats(0, 100_000),
    attempts=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_between_floor_and_cap(
    floor: float, extra: float, attempts: int, seed: int
) -> None:
    """Every delay lies in [floor, cap], whatever the attempt and the jitter."""
    cap = floor + extra
    delay = RetryPolicy(RetryConfig(floor=floor, cap=cap)).delay(attempts, rng=random.Random(seed))
    assert floor <= delay <= cap


def test_backoff_doubles_with_jitter_and_a_hint_wins() -> None:
    """The base doubles per attempt; jitter spreads it over its upper half; a server's
    retry_after hint is used as given."""
    policy = RetryPolicy(RetryConfig(floor=300, cap=4000))
    rng = random.Random(1)
    assert policy.delay(1, rng=rng) == 300
    third = [policy.delay(3, rng=rng) for _ in range(200)]
    assert min(third) >= 600
    assert max(third) <= 1200
    assert len({round(d) for d in third}) > 50
    assert max(policy.delay(30, rng=rng) for _ in range(50)) <= 4000
    assert policy.delay(5, hint=7.5) == 7.5


def test_failed_attempt_waits_then_force_and_retry_ignore_the_backoff(
    store_backend: StoreBackend,
) -> None:
    """After a temporary failure the message waits (a normal flush leaves it); FLUSH_FORCE
    sends it at once; Session.retry() makes it due at once too."""
    script = failing(2)
    with Session.logon(profile(store_backend, script)) as session:
        entry_id = session.submit(MESSAGE)
        before = time.time()
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        entry = session.queue_entry(entry_id)
        assert entry.state is QueueState.RETRY
        assert entry.not_before is not None
        assert before + 60 <= entry.not_before <= time.time() + 600
        assert entry.last_error is not None
        assert "connection refused" in entry.last_error
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert len(script.journal.of("a", "submit_message")) == 1
        session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
        assert len(script.journal.of("a", "submit_message")) == 2
        assert session.queue_entry(entry_id).state is QueueState.RETRY
        session.retry(entry_id)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.SENT


def test_restart_keeps_the_schedule(store_backend: StoreBackend) -> None:
    """not_before survives a restart: the new spooler does not send early."""
    script = failing(1)
    with Session.logon(profile(store_backend, script)) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        scheduled = session.queue_entry(entry_id).not_before
    with Session.logon(profile(store_backend, script)) as session:
        entry = session.queue_entry(entry_id)
        assert entry.state is QueueState.RETRY
        assert entry.not_before == scheduled
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert len(script.journal.of("a", "submit_message")) == 1


def test_lifetime_ends_in_an_ndr_and_retry_reopens(store_backend: StoreBackend) -> None:
    """When the next attempt would fall after the lifetime, the message fails with an NDR
    naming the last error; Session.retry() on it tries again with a new lifetime."""
    script = failing(1)
    with Session.logon(profile(store_backend, script, lifetime=30)) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.FAILED
        (ndr,) = session.folder("Inbox").messages()
        assert ndr.message_class == "Report.IPM.Note.NDR"
        assert b"connection refused" in ndr.content
        session.retry(entry_id)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        assert session.queue_entry(entry_id).state is QueueState.SENT
        assert session.folder("Inbox").count() == 1


def test_delay_warning_is_sent_once_and_survives_restart(store_backend: StoreBackend) -> None:
    """retry.delay_warning: one Report.IPM.Note.DelayedDR in the Inbox for a message still
    not sent that long after submission, never a second one, also after a restart."""
    script = failing(5)
    data = profile(store_backend, script, delay_warning=0.05)
    with Session.logon(data) as session:
        entry_id = session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        time.sleep(0.1)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
        (notice,) = session.folder("Inbox").messages()
        assert notice.props[PR_MESSAGE_CLASS] == "Report.IPM.Note.DelayedDR"
        assert b"Action: delayed" in notice.content
        assert b"b@x.test" in notice.content
    with Session.logon(data) as session:
        session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
        assert session.folder("Inbox").count() == 1
        assert session.queue_entry(entry_id).state is QueueState.RETRY


def test_no_delay_warning_unless_configured_or_for_a_report(store_backend: StoreBackend) -> None:
    """Without delay_warning no notice is sent."""
    script = failing(5)
    with Session.logon(profile(store_backend, script)) as session:
        session.submit(MESSAGE)
        session.spooler_status().flush_queues(FLUSH_UPLOAD)
        session.spooler_status().flush_queues(FLUSH_UPLOAD | FLUSH_FORCE)
        assert session.folder("Inbox").count() == 0
