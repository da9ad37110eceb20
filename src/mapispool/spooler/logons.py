"""The ``Support`` object (IMAPISupport) the spooler hands to each logged-on transport."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from ..spi import OutboundMessage, Recipient, Support
from ..store import Store
from .bridge import BlockingBridge
from .handles import LogonHandle
from .outbound import OutboundRunner
from .status import StatusTable


class SupportHost(Protocol):
    """What ``SpoolerSupport`` needs from the spooler."""

    store: Store
    bridge: BlockingBridge
    outbound: OutboundRunner
    status: StatusTable

    def row_changed(self, handle: LogonHandle, *, requested: bool = False) -> None: ...

    def spooler_notify(self, handle: LogonHandle, flags: int, data: object | None) -> None: ...


class SpoolerSupport(Support):
    """IMAPISupport for one logon: every call goes to the spooler."""

    def __init__(self, spooler: SupportHost, handle: LogonHandle) -> None:
        self._spooler = spooler
        self._handle = handle
        self._logger = logging.getLogger(f"mapispool.transport.{handle.name}")

    @property
    def name(self) -> str:
        return self._handle.name

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._handle.config.settings

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    def modify_status_row(self, props: Mapping[int, object], flags: int = 0) -> None:
        self._spooler.status.modify(self._handle.name, props, flags)
        self._spooler.row_changed(self._handle)

    def status_row(self) -> Mapping[int, object]:
        return self._spooler.status.row(self._handle.name)

    def spooler_notify(self, flags: int, data: object | None = None) -> None:
        self._spooler.spooler_notify(self._handle, flags, data)

    # The SPI's Support methods are synchronous (source-compatible for plug-in
    # transports); the store is asynchronous: each call runs on the spooler's bridge.

    def status_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        outbound = self._spooler.outbound
        self._spooler.bridge.run(lambda: outbound.status_recips(self._handle, message, recipients))

    def delivered_recips(self, message: OutboundMessage, recipients: Sequence[Recipient]) -> None:
        outbound = self._spooler.outbound
        self._spooler.bridge.run(
            lambda: outbound.delivered_recips(self._handle, message, recipients)
        )

    def has_dedupe_key(self, key: str) -> bool:
        return self._spooler.bridge.run(lambda: self._spooler.store.has_dedupe_key(key))

    def known_dedupe_keys(self, keys: Collection[str]) -> set[str]:
        wanted = list(keys)
        if not wanted:
            return set()
        return self._spooler.bridge.run(lambda: self._spooler.store.known_dedupe_keys(wanted))

    def sync(self) -> None:
        self._spooler.bridge.run(self._spooler.store.sync)

    def get_state(self, key: str) -> Any:
        store = self._spooler.store
        return self._spooler.bridge.run(lambda: store.get_transport_state(self._handle.name, key))

    def set_state(self, key: str, value: Any) -> None:
        store = self._spooler.store
        self._spooler.bridge.run(lambda: store.set_transport_state(self._handle.name, key, value))
