"""GET /metrics: the Prometheus text format, parsed by prometheus-client's own parser, with
counters that match what the SMTP server received."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.servers.smtp import SmtpServer
from tests.web.conftest import WebDaemon, post, wait_flush_done


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_parse_and_count_what_was_sent(
    web_daemon: WebDaemon, smtp_server: SmtpServer
) -> None:
    """After a Send/Receive of 5 messages, one of them refused for now (451), the counters
    say 4 sent (what the server took) and 1 retried for the transport, the queue gauges
    agree (the retrying one is the oldest waiting), one flush was timed."""
    web_daemon.submit(5)
    smtp_server.queue_data_answers("250 ok", "451 4.3.0 try later")
    with web_daemon.client() as client:
        before = _samples(client.get("/metrics").text)
        assert before[("mapispool_queue_messages", (("state", "queued"),))] == 5
        assert before[("mapispool_oldest_queued_seconds", ())] >= 0
        assert before[("mapispool_transport_up", (("transport", "out"),))] == 1
        flush_id = post(client, "/api/flush", {}).json()["id"]
        wait_flush_done(client, flush_id)
        answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    samples = _samples(answer.text)
    sent = len(smtp_server.messages)
    assert sent == 4

    def total(outcome: str) -> float:
        return samples[("mapispool_messages_total", (("outcome", outcome), ("transport", "out")))]

    assert total("sent") == sent
    assert total("retried") == 1
    assert total("failed") == total("uncertain") == total("received") == total("deferred") == 0
    assert samples[("mapispool_queue_messages", (("state", "sent"),))] == sent
    assert samples[("mapispool_queue_messages", (("state", "retry"),))] == 1
    assert samples[("mapispool_queue_messages", (("state", "queued"),))] == 0
    assert samples[("mapispool_oldest_queued_seconds", ())] > 0
    assert samples[("mapispool_flush_duration_seconds_count", ())] == 1
    # The transport's gauges are its status row (after a 451 the smtp transport says it is
    # offline until its next try).
    (row,) = [r for r in web_daemon.cli_json("status", "--json") if r["name"] == "out"]
    up = "STATUS_OFFLINE" not in row["status_bits"] and "STATUS_FAILURE" not in row["status_bits"]
    assert samples[("mapispool_transport_up", (("transport", "out"),))] == float(up)
    for bit in ("STATUS_OFFLINE", "STATUS_OUTBOUND_ENABLED", "STATUS_OUTBOUND_FLUSH"):
        labels = (("bit", bit), ("transport", "out"))
        assert samples[("mapispool_transport_status", labels)] == float(bit in row["status_bits"])
