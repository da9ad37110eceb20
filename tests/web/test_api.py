"""The HTTP API of ``mapispool serve --web``, over real HTTP against a real daemon that
sends to a real SMTP server on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.servers.smtp import ACCEPTED, SmtpServer, SmtpTransaction
from tests.web.conftest import WebDaemon, command, env, post, wait_flush_done, wait_until


def test_status_is_the_cli_json(web_daemon: WebDaemon) -> None:
    """GET /api/status answers exactly what `mapispool status --json` prints."""
    with web_daemon.client() as client:
        answer = client.get("/api/status")
    assert answer.status_code == 200
    assert answer.json() == web_daemon.cli_json("status", "--json")
    assert [row["name"] for row in answer.json()] == ["Spooler", "out"]


def test_queue_is_the_cli_json_a_page_at_a_time(web_daemon: WebDaemon) -> None:
    """GET /api/queue gives `queue list --json`'s entries; with a limit, the Link header's
    next page follows on until every entry was seen once, in submit order."""
    ids = web_daemon.submit(7)
    with web_daemon.client() as client:
        assert client.get("/api/queue").json() == web_daemon.cli_json("queue", "list", "--json")
        seen: list[str] = []
        url: str | None = "/api/queue?limit=3"
        pages = 0
        while url:
            answer = client.get(url)
            assert answer.status_code == 200
            seen += [entry["entry_id"] for entry in answer.json()]
            pages += 1
            link = answer.links.get("next")
            url = link["url"] if link else None
    assert seen == ids
    assert pages == 3


def test_queue_actions_and_state_filter(web_daemon: WebDaemon) -> None:
    """hold, release, retry and cancel act on one message; ?state= lists one state; an
    action the state does not allow is a 400 with the reason."""
    first, second = web_daemon.submit(2)
    with web_daemon.client() as client:
        assert post(client, f"/api/queue/{first}/hold").json() == {
            "entry_id": first,
            "action": "hold",
        }
        held = client.get("/api/queue?state=held").json()
        assert [e["entry_id"] for e in held] == [first]
        refused = post(client, f"/api/queue/{second}/release")
        assert refused.status_code == 400
        assert "cannot release" in refused.json()["message"]
        assert post(client, f"/api/queue/{first}/release").status_code == 200
        assert post(client, f"/api/queue/{second}/cancel").status_code == 200
        states = {e["entry_id"]: e["state"] for e in client.get("/api/queue?state=all").json()}
        assert states == {first: "queued", second: "cancelled"}
        assert post(client, f"/api/queue/{first}/explode").status_code == 404
        assert post(client, "/api/queue/zz/hold").status_code == 400
        assert client.get("/api/queue?state=nonsense").status_code == 400


def test_flush_is_202_then_409_busy_while_running(
    web_daemon: WebDaemon, smtp_server: SmtpServer
) -> None:
    """POST /api/flush starts a Send/Receive (202 with its id); a second one while it runs
    is 409 {"error": "busy"}; the first ends having sent every message."""
    web_daemon.submit(3)
    release = threading.Event()

    def slow(_transaction: SmtpTransaction) -> str:
        release.wait(30)
        return ACCEPTED

    smtp_server.set_data_answer(slow)
    with web_daemon.client() as client:
        started = post(client, "/api/flush", {"upload": True})
        assert started.status_code == 202
        flush_id = started.json()["id"]
        busy = post(client, "/api/flush", {})
        assert (busy.status_code, busy.json()) == (409, {"error": "busy"})
        release.set()
        result = wait_flush_done(client, flush_id)
    assert result["ok"] is True
    assert [t["sent"] for t in result["transports"]] == [3]
    assert len(smtp_server.messages) == 3


def test_flush_refuses_bad_bodies(web_daemon: WebDaemon) -> None:
    """A flush body with an unknown key, a wrong type or an unknown transport is refused
    with a message saying what is wrong; nothing starts."""
    with web_daemon.client() as client:
        assert post(client, "/api/flush", {"upload": "yes"}).status_code == 400
        assert post(client, "/api/flush", {"bogus": True}).status_code == 400
        unknown = post(client, "/api/flush", {"transport": "nowhere"})
        assert unknown.status_code == 404
        assert "nowhere" in unknown.json()["message"]
        assert client.get("/api/flushes").json() == []


def _read_events(client: httpx.Client, until: str, into: list[tuple[str, Any]]) -> None:
    with client.stream("GET", "/api/events") as stream:
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                into.append((kind, json.loads(line.partition(":")[2])))
                if kind == until:
                    return


def test_events_report_status_rows_and_flush_progress(
    web_daemon: WebDaemon, smtp_server: SmtpServer
) -> None:
    """/api/events streams the Send/Receive: begun, message n of N for the transport, its
    end with counts, the whole flush's end; and the transport's status-row changes."""
    web_daemon.submit(4)
    events: list[tuple[str, Any]] = []
    with web_daemon.client() as reader, web_daemon.client() as client:
        thread = threading.Thread(target=_read_events, args=(reader, "flush-ended", events))
        thread.start()
        wait_until(lambda: events)  # the stream is open (its hello arrived)
        flush_id = post(client, "/api/flush", {}).json()["id"]
        thread.join(60)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "hello"
    assert "flush-begun" in kinds
    outbound = [d for k, d in events if k == "flush-progress" and d["phase"] == "outbound"]
    assert [(d["done"], d["total"]) for d in outbound] == [(n, 4) for n in range(5)]
    assert all(d["flush"] == flush_id and d["transport"] == "out" for d in outbound)
    done = [d for k, d in events if k == "flush-progress" and d["phase"] == "done"]
    assert done[0]["counts"]["sent"] == 4
    texts = {d["status_string"] for k, d in events if k == "status" and d["name"] == "out"}
    assert "Flushing outbound queue" in texts
    ended = events[-1][1]
    assert ended["id"] == flush_id
    assert ended["result"]["transports"][0]["sent"] == 4
    assert len(smtp_server.messages) == 4


def test_a_port_in_use_is_a_one_line_error(web_daemon: WebDaemon, tmp_path: Path) -> None:
    """A second daemon (another store) asked to serve on a port already taken stops with
    an error naming the address and how to choose another, exit 75 (try again later)."""
    other = tmp_path / "other"
    other.mkdir()
    profile = other / "profile.toml"
    profile.write_text(
        web_daemon.profile.read_text(encoding="utf-8").replace('"store.db"', '"other.db"'),
        encoding="utf-8",
    )
    done = subprocess.run(
        command(profile, "serve"), capture_output=True, text=True, env=env(), timeout=60
    )
    assert done.returncode == 75
    last = done.stderr.strip().splitlines()[-1]
    assert f"cannot serve the web page on 127.0.0.1:{web_daemon.port}" in last
    assert "--web HOST:PORT" in last


def test_a_flush_started_elsewhere_is_followed_too(
    web_daemon: WebDaemon, smtp_server: SmtpServer
) -> None:
    """A Send/Receive the daemon starts on SIGUSR1 shows in the events (begun, the
    transport's counts, ended), in /api/flushes and in the metrics."""
    web_daemon.submit(2)
    events: list[tuple[str, Any]] = []
    with web_daemon.client() as reader, web_daemon.client() as client:
        thread = threading.Thread(target=_read_events, args=(reader, "flush-ended", events))
        thread.start()
        wait_until(lambda: events)
        web_daemon.process.send_signal(signal.SIGUSR1)
        thread.join(60)
        (record,) = client.get("/api/flushes").json()
        metrics = client.get("/metrics").text
    assert record["origin"] == "daemon"
    assert record["result"]["transports"][0]["sent"] == 2
    done = [d for k, d in events if k == "flush-progress" and d["phase"] == "done"]
    assert [(d["transport"], d["counts"]["sent"]) for d in done] == [("out", 2)]
    assert 'mapispool_messages_total{outcome="sent",transport="out"} 2.0' in metrics
    assert len(smtp_server.messages) == 2
