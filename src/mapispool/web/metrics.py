"""``GET /metrics``: the spooler in the Prometheus text format.

Counters and the flush histogram grow with every Send/Receive the daemon runs (the hub
reports each one's ``FlushResult``); gauges are read from the store and the status table
at each scrape, so they are never stale. Each daemon has its own registry: nothing here
touches prometheus-client's global one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..mapi import (
    PR_DISPLAY_NAME,
    PR_STATUS_CODE,
    STATUS_AVAILABLE,
    STATUS_FAILURE,
    STATUS_INBOUND_ENABLED,
    STATUS_OFFLINE,
    STATUS_OUTBOUND_ENABLED,
    StatusCode,
)
from ..session import AsyncSession
from ..spooler.flush import FlushResult
from ..spooler.status import StatusRow
from ..store import QueueState
from .queue_pages import store_page

#: ``mapispool_messages_total`` outcomes, each the ``TransportFlushResult`` field it counts.
OUTCOMES = {
    "sent": "sent",
    "failed": "failed",
    "retried": "retried",
    "deferred": "deferred",
    "uncertain": "uncertain",
    "received": "received",
}
#: Messages waiting to go out: what ``mapispool_oldest_queued_seconds`` looks at.
WAITING = (QueueState.QUEUED, QueueState.RETRY, QueueState.IN_FLIGHT, QueueState.PARKED)
#: A row with any of these bits (and neither OFFLINE nor FAILURE) is up, as
#: ``describe_status_code`` calls it "Available".
_USABLE = STATUS_AVAILABLE | STATUS_INBOUND_ENABLED | STATUS_OUTBOUND_ENABLED
FLUSH_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class SpoolerMetrics:
    """The registry of one daemon; ``record_flush`` is the hub's flush listener."""

    def __init__(self, session: AsyncSession) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "mapispool_messages",
            "Messages by transport and outcome, over the Send/Receive runs of this daemon.",
            ["transport", "outcome"],
            registry=self.registry,
        )
        self.flush_duration = Histogram(
            "mapispool_flush_duration_seconds",
            "How long each Send/Receive took.",
            buckets=FLUSH_BUCKETS,
            registry=self.registry,
        )
        self.session = session
        self._state = _StateCollector()
        self.registry.register(self._state)
        for config in session.profile.transports:  # every series exists from the start
            for outcome in OUTCOMES:
                self.messages.labels(config.name, outcome)

    async def render(self) -> bytes:
        """The scrape: the store and the status table are read here, then rendered."""
        first = await store_page(self.session.store, WAITING, None, 1)
        rows = await self.session.status_table()
        self._state.reading = _Reading(
            counts=await self.session.store.count_by_state(),
            oldest_submit=first[0].submit_time if first else None,
            transport_rows=rows[1:],  # the spooler's row comes first
        )
        return generate_latest(self.registry)

    def record_flush(self, result: FlushResult) -> None:
        for name, counts in result.transports.items():
            for outcome, attribute in OUTCOMES.items():
                value = int(getattr(counts, attribute))
                if value:
                    self.messages.labels(name, outcome).inc(value)
        if result.finished is not None:
            self.flush_duration.observe(max(0.0, result.finished - result.started))


@dataclass
class _Reading:
    """What the gauges show, read just before a scrape is rendered."""

    counts: Mapping[QueueState, int] = field(default_factory=dict)
    oldest_submit: float | None = None
    transport_rows: Sequence[StatusRow] = ()
    at: float = field(default_factory=time.time)


class _StateCollector(Collector):
    """Gauges from the last reading: the queue by state, its oldest waiting message, and
    each transport's status row. ``collect`` does no I/O (prometheus-client calls it
    synchronously); ``SpoolerMetrics.render`` reads first."""

    def __init__(self) -> None:
        self.reading = _Reading()

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # names are known only from a collect; nothing to check up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reading = self.reading
        queue = GaugeMetricFamily(
            "mapispool_queue_messages", "Messages in the outgoing queue by state.", labels=["state"]
        )
        for state in QueueState:
            queue.add_metric([state.value], reading.counts.get(state, 0))
        yield queue
        oldest = GaugeMetricFamily(
            "mapispool_oldest_queued_seconds",
            "Age of the oldest message waiting to be sent (0 when none waits).",
        )
        first = reading.oldest_submit
        oldest.add_metric([], max(0.0, reading.at - first) if first is not None else 0.0)
        yield oldest
        yield from self._transports()

    def _transports(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "mapispool_transport_up",
            "1 when the transport is logged on and available, else 0.",
            labels=["transport"],
        )
        bits = GaugeMetricFamily(
            "mapispool_transport_status",
            "The transport's PR_STATUS_CODE, one series per named bit (1 set, 0 clear).",
            labels=["transport", "bit"],
        )
        for row in self.reading.transport_rows:
            label = str(row.get(PR_DISPLAY_NAME, ""))
            code = int(row.get(PR_STATUS_CODE, 0))
            healthy = code & _USABLE and not code & (STATUS_OFFLINE | STATUS_FAILURE)
            up.add_metric([label], 1.0 if healthy else 0.0)
            for member in StatusCode:
                bits.add_metric([label, str(member.name)], 1.0 if code & member.value else 0.0)
        yield up
        yield bits
