"""Postfix's smtp-sink: a fast C SMTP server that discards mail and injects faults on demand.

Every transaction is dumped to a file (``-d dumpdir/%H%M.``), which :meth:`SmtpSink.transactions`
parses back into envelopes and message bytes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers._util import (
    HOST,
    free_port,
    need,
    need_root,
    port_open,
    stop_process,
    wait_for_ports,
    wait_until,
)
from tests.servers.dirs import ServerDirs

SINK_USER = "nobody"


@dataclass(frozen=True)
class SinkTransaction:
    """One transaction smtp-sink dumped.

    ``mail_from`` and ``rcpt_tos`` are the bare addresses (``<>`` stripped) of MAIL FROM and
    of each RCPT TO that smtp-sink *received* (it records refused RCPTs too when ``-r``/``-f``
    reject them); ``mail_args``/``rcpt_args`` keep the full command arguments (ESMTP
    parameters included). ``data`` is the message after dot-unstuffing, with CRLF line ends.
    """

    client_addr: str
    helo: str | None
    mail_args: str
    rcpt_args: tuple[str, ...]
    data: bytes
    path: Path

    @property
    def mail_from(self) -> str:
        """The reverse path of MAIL FROM, without angle brackets."""
        return _address(self.mail_args)

    @property
    def rcpt_tos(self) -> tuple[str, ...]:
        """The forward paths of the RCPT TO commands, without angle brackets."""
        return tuple(_address(arg) for arg in self.rcpt_args)


def _address(args: str) -> str:
    first = args.split(" ", 1)[0] if args else ""
    return first[1:-1] if first.startswith("<") and first.endswith(">") else first


def parse_dump(path: Path) -> SinkTransaction:
    """Parse one smtp-sink ``-d`` dump file (see the DUMP FILE FORMAT of smtp-sink(1))."""
    lines = path.read_bytes().split(b"\n")
    fields: dict[str, list[str]] = {}
    index = 0
    while index < len(lines) and not lines[index].startswith(b"Received:"):
        name, _, value = lines[index].decode("utf-8", "replace").partition(": ")
        fields.setdefault(name, []).append(value)
        index += 1
    index += 1  # the Received: line, then its folded continuation lines
    while index < len(lines) and lines[index].startswith((b"\t", b" ")):
        index += 1
    body = lines[index:]
    # smtp-sink ends each dump with one empty line of its own; split() adds one more "".
    if body[-2:] == [b"", b""]:
        body = body[:-2]
    data = b"".join(line + b"\r\n" for line in body)
    return SinkTransaction(
        client_addr=fields.get("X-Client-Addr", [""])[0],
        helo=fields.get("X-Helo-Args", [None])[0],
        mail_args=fields.get("X-Mail-Args", [""])[0],
        rcpt_args=tuple(fields.get("X-Rcpt-Args", [])),
        data=data,
        path=path,
    )


def _commands(commands: Iterable[str]) -> str:
    return ",".join(c.upper() for c in commands)


class SmtpSink:
    """A running ``smtp-sink -u nobody 127.0.0.1:PORT 256``.

    Fault options (each a list of SMTP command names such as ``"RCPT"``, ``"DATA"``,
    ``"."``, ``"MAIL"``, ``"CONNECT"``): ``soft_reject`` (-r, 4xx), ``hard_reject`` (-f, 5xx),
    ``reply_421`` (-Q, 421 then disconnect), ``disconnect`` (-q, drop without a reply).
    ``data_delay`` (-w) waits before answering DATA; ``delays`` (-W) maps a command to seconds
    before answering it. ``soft_bounce_reply``/``hard_bounce_reply`` (-b/-B) replace the
    reject texts. ``extra_args`` go to smtp-sink verbatim.
    """

    def __init__(
        self,
        base: Path,
        *,
        soft_reject: Iterable[str] = (),
        hard_reject: Iterable[str] = (),
        reply_421: Iterable[str] = (),
        disconnect: Iterable[str] = (),
        data_delay: int | None = None,
        delays: Mapping[str, int] | None = None,
        soft_bounce_reply: str | None = None,
        hard_bounce_reply: str | None = None,
        hostname: str = "sink.example.test",
        extra_args: Iterable[str] = (),
    ) -> None:
        self.binary = need("smtp-sink")
        need_root("smtp-sink -u nobody")
        self.host = HOST
        self.port = free_port()
        self.base = base
        self.dump_dir = base / "dump"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dump_dir, SINK_USER)
        args = [self.binary, "-u", SINK_USER, "-h", hostname, "-d", f"{self.dump_dir}/%H%M."]
        for flag, commands in (
            ("-r", soft_reject),
            ("-f", hard_reject),
            ("-Q", reply_421),
            ("-q", disconnect),
        ):
            joined = _commands(commands)
            if joined:
                args += [flag, joined]
        if data_delay is not None:
            args += ["-w", str(data_delay)]
        for command, seconds in (delays or {}).items():
            args += ["-W", f"{command.upper()}:{seconds}"]
        if soft_bounce_reply is not None:
            args += ["-b", soft_bounce_reply]
        if hard_bounce_reply is not None:
            args += ["-B", hard_bounce_reply]
        args += [*extra_args, f"{HOST}:{self.port}", "256"]
        self.args = args
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        """Start smtp-sink; returns once its port accepts connections."""
        log = self.base / "smtp-sink.log"
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        try:
            wait_for_ports([self.port], proc=self._proc, log=log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM smtp-sink and wait for it (it does not fork). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
            wait_until(lambda: not port_open(self.port), 5.0, "smtp-sink port to close")

    def transactions(self) -> list[SinkTransaction]:
        """Every dumped transaction, ordered by when its dump was last written.

        The order is only as fine as the file system's clock tick (a few ms): match
        transactions by content, not position, when several arrive quickly.
        """
        files = [p for p in self.dump_dir.rglob("*") if p.is_file()]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [parse_dump(p) for p in files]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[SinkTransaction]:
        """Block until at least *count* transactions were dumped; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.transactions()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} transactions within {timeout}s")
            time.sleep(0.01)


SmtpSinkFactory = Callable[..., SmtpSink]


@pytest.fixture
def smtp_sink_factory(server_dirs: ServerDirs) -> Iterator[SmtpSinkFactory]:
    """Start smtp-sink servers with fault options (see :class:`SmtpSink`); stopped at teardown.

    Skips (fails under CI=true) when Postfix's smtp-sink is missing or not running as root.
    """
    sinks: list[SmtpSink] = []

    def make(**options: Any) -> SmtpSink:
        sink = SmtpSink(server_dirs.make("smtp-sink"), **options)
        sinks.append(sink.start())
        return sink

    yield make
    for sink in sinks:
        sink.stop()


@pytest.fixture
def smtp_sink(smtp_sink_factory: SmtpSinkFactory) -> SmtpSink:
    """A fault-free smtp-sink that accepts every message and dumps it."""
    return smtp_sink_factory()
