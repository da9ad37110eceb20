"""The curated public surface is pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import mapispool
import mapispool.spi


def test_top_level_names():
    """mapispool.__all__ is sorted and exactly these names."""
    assert mapispool.__all__ == sorted(mapispool.__all__)
    assert set(mapispool.__all__) == {
        "AsyncSession", "AsyncStatus", "FlushHandle", "FlushProgress", "FlushResult",
        "InboundMessage", "MapiError", "OutboundMessage", "Profile", "ProfileError",
        "QueueEntry", "QueueState", "Recipient", "Session", "Status", "StoredMessage",
        "Support", "TransportFlushResult", "TransportLogon", "TransportProvider", "__version__",
    }  # fmt: skip


def test_spi_contract_names():
    """The SPI names of DESIGN §5 exist with their methods."""
    logon = mapispool.spi.TransportLogon
    methods = ("address_types", "transport_notify", "submit_message", "end_message", "poll",
               "start_message", "flush_queues", "validate_state", "idle", "logoff")  # fmt: skip
    for method in methods:
        assert callable(getattr(logon, method)), method
    for method in ("modify_status_row", "status_row", "spooler_notify", "status_recips"):
        assert callable(getattr(mapispool.spi.Support, method)), method
