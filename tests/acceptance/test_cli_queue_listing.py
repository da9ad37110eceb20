"""Small things the outside check of issues #9/#10 found in listing and scheduling:
``sendmail -bp`` on an empty queue says so, as mailq does, and a send-later time too far
ahead is refused with the latest time that works."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.test_cli_support import message, run, smtp_profile


def test_sendmail_bp_says_an_empty_queue_is_empty_then_lists_it(tmp_path: Path) -> None:
    profile = smtp_profile(tmp_path, 9)  # nothing is sent: the port is never dialled
    empty = run(profile, "sendmail", "-bp")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "Mail queue is empty"
    queued = run(profile, "submit", "-", stdin=message("waiting"))
    assert queued.returncode == 0, queued.stderr
    listed = run(profile, "sendmail", "-bp")
    assert listed.returncode == 0, listed.stderr
    assert "Mail queue is empty" not in listed.stdout
    assert queued.stdout.strip() in listed.stdout
    assert "bob@example.test" in listed.stdout  # mailq's format: recipients, no subject


def test_send_at_too_far_ahead_names_the_latest_time_that_works(tmp_path: Path) -> None:
    profile = smtp_profile(tmp_path, 9)
    done = run(profile, "submit", "--send-at", "9999-12-31T23:00", "-", stdin=message())
    assert done.returncode == 64
    assert "9999-12-31T00:00Z" in done.stderr
    assert "--send-at" in done.stderr
