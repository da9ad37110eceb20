"""``mapispool-sendmail``'s delivery modes and queue commands (issue #13), each in a
subprocess against aiosmtpd on loopback: with no daemon the message goes out through a
detached background Send/Receive; -odi delivers before exiting (0, 75, 69); -odq only
queues; -q runs the queue; -bp prints it as mailq does."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.acceptance.test_cli_support import run, sendmail, smtp_profile
from tests.acceptance.test_daemon_support import Serve, wait_until
from tests.servers.smtp import SmtpServer

BODY = b"Subject: {subject}\n\nhello\n"


def body(subject: str) -> bytes:
    return BODY.replace(b"{subject}", subject.encode())


@pytest.fixture
def eager(tmp_path: Path, smtp: SmtpServer) -> Path:
    """A profile with the defaults: send_immediately = true, so delivery "background"."""
    return smtp_profile(tmp_path, smtp.port, send_immediately=True)


def _send(profile: Path, *args: str, subject: str = "hi", to: str = "bob@example.test") -> int:
    done = sendmail(["--profile", str(profile), "-f", "me@example.test", *args, to], body(subject))
    return done.returncode


def _queue(profile: Path, *extra: str) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads(
        run(profile, "queue", "list", "--json", *extra).stdout
    )
    return entries


def _no_spooler_left(profile: Path) -> bool:
    lock = profile.parent / "store.db.lock"
    return not lock.exists() or not lock.read_text().startswith("running")


def test_without_a_daemon_the_message_goes_out_in_the_background(
    eager: Path, smtp: SmtpServer
) -> None:
    """The default with no daemon: queued durably, exit 0 at once, then sent by a
    detached Send/Receive, which stops when the queue is done. Several in a row (one
    background run picks up the others) all arrive."""
    for n in range(3):
        assert _send(eager, subject=f"background {n}") == 0
    received = smtp.wait_for(3, timeout=60)
    assert sorted(r.data.split(b"Subject: ")[1][:12] for r in received) == [
        b"background 0",
        b"background 1",
        b"background 2",
    ]
    wait_until(lambda: _no_spooler_left(eager), timeout=60)
    wait_until(lambda: [e["state"] for e in _queue(eager, "--all")] == ["sent"] * 3, 30)


def test_odq_and_the_queue_setting_only_queue(tmp_path: Path, smtp: SmtpServer) -> None:
    """-odq only queues; so does [sendmail] delivery = "queue" in the profile."""
    profile = smtp_profile(tmp_path, smtp.port, send_immediately=True)
    assert _send(profile, "-odq", subject="odq") == 0
    with profile.open("a", encoding="utf-8") as handle:
        handle.write('\n[sendmail]\ndelivery = "queue"\n')
    assert _send(profile, subject="setting") == 0
    time.sleep(2)  # what a background run would have needed to connect (it must not run)
    assert smtp.messages == []
    assert len(_queue(profile)) == 2


def test_odi_delivers_before_it_exits(eager: Path, smtp: SmtpServer) -> None:
    """-odi: 0 once the server took it."""
    assert _send(eager, "-odi", subject="now") == 0
    [received] = smtp.messages
    assert b"Subject: now" in received.data
    assert [e["state"] for e in _queue(eager, "--all")] == ["sent"]


def test_odi_with_a_daemon_waits_for_the_daemon_to_send(tmp_path: Path, smtp: SmtpServer) -> None:
    """-odi while serve runs: the daemon sends, sendmail exits 0 once it has."""
    profile = smtp_profile(tmp_path, smtp.port, send_immediately=True)
    daemon = Serve(profile).wait_started()
    try:
        assert _send(profile, "-odi", subject="via daemon") == 0
        [received] = smtp.messages
        assert b"Subject: via daemon" in received.data
    finally:
        daemon.stop()


def test_odi_exits_69_when_refused_for_good(tmp_path: Path, smtp: SmtpServer) -> None:
    """-odi: 69 when the recipient is refused (550), with the reason on stderr."""
    profile = smtp_profile(tmp_path, smtp.port)
    done = sendmail(["--profile", str(profile), "-odi", "-f", "me@example.test",
                     "nobody@example.test"], body("refused"))  # fmt: skip
    assert done.returncode == 69, done.stderr
    assert b"550" in done.stderr


def test_odi_exits_75_when_it_must_wait_for_a_retry(tmp_path: Path, smtp: SmtpServer) -> None:
    """-odi: 75 when the server says try later; the message waits in the queue."""
    profile = smtp_profile(tmp_path, smtp.port)
    smtp.handler.mail_answer = "451 4.3.0 try later"
    done = sendmail(["--profile", str(profile), "-odi", "-f", "me@example.test",
                     "bob@example.test"], body("later"))  # fmt: skip
    assert done.returncode == 75, done.stderr
    assert b"451" in done.stderr
    assert [e["state"] for e in _queue(profile)] == ["retry"]


def test_q_runs_the_queue(tmp_path: Path, smtp: SmtpServer) -> None:
    """-q sends what is queued (like flush --upload) and exits 0."""
    profile = smtp_profile(tmp_path, smtp.port)
    assert _send(profile, "-odq", subject="one") == 0
    assert _send(profile, "-odq", subject="two") == 0
    assert smtp.messages == []
    done = sendmail(["--profile", str(profile), "-q"], b"")
    assert done.returncode == 0, done.stderr
    assert len(smtp.wait_for(2)) == 2
    assert _queue(profile) == []


def test_bp_prints_the_queue_as_mailq_does(tmp_path: Path, smtp: SmtpServer) -> None:
    """-bp: Postfix's mailq layout: header, one block per message (id with * or !,
    size, arrival, sender; the retry reason; recipients), then the total line."""
    profile = smtp_profile(tmp_path, smtp.port)
    assert _send(profile, "-odq", subject="held") == 0
    assert _send(profile, "-odq", subject="retried", to="carol@example.test") == 0
    held, retried = (str(e["entry_id"]) for e in _queue(profile))
    assert run(profile, "queue", "hold", held).returncode == 0
    smtp.handler.mail_answer = "451 4.3.0 try later"
    run(profile, "flush", "--upload")
    done = run(profile, "sendmail", "-bp")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("-Queue ID-  --Size-- ----Arrival Time----")
    assert re.match(rf"^{held}! +\d+ \w{{3}} \w{{3}} +\d+ \d\d:\d\d:\d\d  me@example\.test$",
                    lines[1]), lines  # fmt: skip
    assert lines[2].strip() == "bob@example.test"
    assert re.match(rf"^{retried} +\d+ ", lines[4]), lines
    assert "451" in lines[5]
    assert lines[5].strip().startswith("(")
    assert lines[6].strip() == "carol@example.test"
    assert lines[-1] == "-- 1 Kbytes in 2 Requests."
