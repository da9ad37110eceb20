"""The entry point of ``mapispool-sendmail``: hand the invocation to a running daemon.

When ``mapispool serve`` runs for the profile, it listens on a second socket keyed by
the profile file's real path (``handoff_socket``), because finding the store's own socket
would mean loading the profile, which is most of a process's cost. This module sends the
daemon the arguments, the message, the caller's working directory and the environment
variables the invocation reads (``PASSED_ENV``); the daemon runs the very code a local
process runs (``sendmail_run.run``: the argument rules, refusals and exit codes, the
canonical form, the submit rows) and answers the exit code and the lines for stderr.

Exactly once: the client picks a random submission id and sends it; the daemon commits
it with the message (a dedupe key in the same transaction). When the answer does not come
(the daemon was killed, closed the connection, or is wedged past ``ANSWER_TIMEOUT``), the
client runs the invocation itself with the same id: if the daemon had committed it,
nothing is written twice and the exit is 0; otherwise the message is queued here.

Anything the daemon may not run (``-bp``, ``-q``, ``-odi``, no daemon, a socket that is
not our own daemon's, a message over ``MAX_HANDOFF``) runs in this process as before.
Imports are kept to what this needs (os, sys, ``_socket``; ``daemon.trust``): the rest of
mapispool is imported only when the invocation runs here.
"""

from __future__ import annotations

# The C socket module, not ``socket``: that one builds enums and imports ``selectors`` at
# import, half of this client's imports; a blocking AF_UNIX stream needs none of it.
import _socket
import os
import sys

from ..daemon import trust

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (import cost)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO

#: The first field of a request and of an answer: the layout of the fields below.
VERSION = b"mapispool-sendmail/1"

#: Seconds to connect to the daemon, and to wait for its answer before running here.
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 15.0

#: Larger messages are queued by this process (the daemon holds a request in memory).
MAX_HANDOFF = 64 * 1024 * 1024

#: The environment a sendmail invocation reads: the login name for a missing From (as
#: ``getpass.getuser``), and mapispool's own variables.
PASSED_ENV = ("LOGNAME", "USER", "LNAME", "USERNAME")

#: Option letters that take a value (``sendmail_args._WITH_VALUE``; a test keeps them equal).
WITH_VALUE = "fFrBNRVXCLhpO"


def main() -> None:
    """Entry point of the ``mapispool-sendmail`` script."""
    sys.exit(hand_off_or_run(sys.argv[1:]))


def hand_off_or_run(args: list[str]) -> int:
    """Run one invocation through the running daemon, else in this process; the exit code."""
    scanned = scan_args(args)
    path = None if scanned is None else profile_path(scanned[0], os.environ)
    sock = None if path is None else connect(handoff_sockets(path, os.environ))
    if scanned is None or path is None or sock is None:
        return run_here(args, None, None)
    try:
        content = read_message(sys.stdin.buffer, scanned[1])
        if len(content) > MAX_HANDOFF:
            return run_here(args, content, None)
        key = "sendmail:" + os.urandom(16).hex()
        try:
            sock.settimeout(ANSWER_TIMEOUT)
            sock.sendall(request(key, path, args, content))
            code, handled, text = read_answer(sock)
        except (OSError, ValueError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            warn(f"the daemon did not answer ({reason}); queueing the message here")
            return run_here(args, content, key)
    finally:
        sock.close()
    if not handled:
        return run_here(args, content, key)
    sys.stderr.write(text)
    sys.stderr.flush()
    return code


def run_here(args: list[str], content: bytes | None, key: str | None) -> int:
    """The invocation in this process (``sendmail_run.run``); ``content`` is the message
    when this client has read stdin already."""
    from io import BytesIO

    from .sendmail_run import run

    stdin = sys.stdin.buffer if content is None else BytesIO(content)
    return run(args, stdin, submission_key=key)


def scan_args(args: list[str]) -> tuple[str | None, bool] | None:
    """The ``--profile`` given and whether -i/-oi is given, read as ``sendmail_args``
    reads them; None when the invocation is not one to hand off (``-bp``, ``-q``,
    ``-odi``, another ``-b``): this process runs it. A refusal is left to the daemon."""
    profile, ignore_dots = None, False
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--profile"):
            value = arg.partition("=")[2]
            if not value:
                if i >= len(args):
                    return None
                value, i = args[i], i + 1
            profile = value
            continue
        if not arg.startswith("-") or arg == "-":
            continue
        flag, rest = arg[1:2], arg[2:]
        if flag in WITH_VALUE:
            i += 0 if rest else 1
        elif flag == "i" or (flag == "o" and rest == "i"):
            ignore_dots = True
        elif flag == "q" or (flag == "b" and rest != "m") or (flag == "o" and rest[:2] == "di"):
            return None
    return profile, ignore_dots


def profile_path(given: str | None, env: Mapping[str, str]) -> str | None:
    """The real path of the profile the invocation uses (as ``sendmail_run`` chooses it:
    ``--profile``, ``$MAPISPOOL_PROFILE``, the user's config directory), or None where
    the config directory is not ``$XDG_CONFIG_HOME`` or ``~/.config`` (not Linux)."""
    chosen = given or env.get("MAPISPOOL_PROFILE")
    if not chosen:
        if not sys.platform.startswith("linux"):
            return None
        config = env.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
        chosen = os.path.join(config, "mapispool", "profile.toml")
    return os.path.realpath(chosen)


def handoff_socket(profile: str, env: Mapping[str, str]) -> str:
    """Where the daemon serving the profile at the real path ``profile`` takes hand-offs:
    in the user's runtime directory (``$XDG_RUNTIME_DIR/mapispool``, else
    ``mapispool-UID`` in ``$TMPDIR`` or /tmp), named by a CRC of the path (the daemon
    checks the path itself)."""
    return handoff_sockets(profile, env)[0]


def handoff_sockets(profile: str, env: Mapping[str, str]) -> list[str]:
    """Where a client looks, in order: where a daemon with this environment listens
    (``handoff_socket``), then the systemd runtime directory and the temporary one, so
    that a caller without ``$XDG_RUNTIME_DIR`` (cron) finds a daemon run under systemd,
    and the other way round."""
    from binascii import crc32

    tmp = env.get("TMPDIR") or env.get("TEMP") or env.get("TMP") or "/tmp"
    folders = [os.path.join(os.path.abspath(tmp), f"mapispool-{os.geteuid()}")]
    folders.insert(0, f"/run/user/{os.geteuid()}/mapispool")
    if env.get("XDG_RUNTIME_DIR"):
        folders.insert(0, os.path.join(env["XDG_RUNTIME_DIR"], "mapispool"))
    else:
        folders.append(folders.pop(0))  # a daemon without it listens in the temporary one
    name = f"sendmail-{crc32(os.fsencode(profile)):08x}.sock"
    return [os.path.join(folder, name) for folder in dict.fromkeys(folders)]


def connect(paths: list[str]) -> _socket.socket | None:
    """A connected socket to our own daemon at the first of ``paths`` that has one, or
    None: no socket there, a stale one, or one that is not ours (then a warning, as
    ``daemon.notify``)."""
    for path in paths:
        if not os.path.lexists(path):
            continue
        problem = trust.socket_file_problem(path)
        sock = None
        if problem is None:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                continue  # a socket left by a daemon that was killed
            problem = trust.peer_problem(sock)
        if problem is None and sock is not None:
            return sock
        if sock is not None:
            sock.close()
        warn(f"not using the daemon's socket {path}: {problem}")
    return None


def read_message(stream: BinaryIO, ignore_dots: bool) -> bytes:
    """The message on ``stream``: to its end with -i (``ignore_dots``), else up to a line
    holding only ".", as in sendmail (``sendmail_run.read_message`` is the same: this
    module may import next to nothing, and that one may not import this one)."""
    if ignore_dots:
        return stream.read()
    lines: list[bytes] = []
    for line in stream:
        if line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)


def netstring(value: bytes) -> bytes:
    """``LENGTH:VALUE,``: one field of a request or an answer."""
    return b"%d:%s," % (len(value), value)


def request(key: str, profile: str, args: list[str], content: bytes) -> bytes:
    """The request: version, submission id, profile, working directory, the passed
    environment (count, then NAME=VALUE fields), the arguments (count, then each), the
    message."""
    env = [f"{k}={v}" for k, v in os.environ.items() if k in PASSED_ENV or k[:10] == "MAPISPOOL_"]
    fields = [VERSION, key.encode(), os.fsencode(profile), os.fsencode(os.getcwd())]
    fields += [b"%d" % len(env), *map(os.fsencode, env)]
    fields += [b"%d" % len(args), *map(os.fsencode, args), content]
    return b"".join(map(netstring, fields))


def read_answer(sock: _socket.socket) -> tuple[int, bool, str]:
    """The daemon's answer: exit code, whether it ran the invocation, stderr's text.
    ``ValueError`` for an answer cut short or malformed."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    fields = []
    while data:
        length, colon, rest = data.partition(b":")
        size = int(length) if colon and length.isdigit() else -1
        if size < 0 or rest[size : size + 1] != b",":
            raise ValueError("the daemon's answer was cut short")
        fields.append(rest[:size])
        data = rest[size + 1 :]
    if len(fields) != 4 or fields[0] != VERSION:
        raise ValueError("the daemon closed the connection without an answer")
    return int(fields[1]), fields[2] == b"1", fields[3].decode("utf-8", "replace")


def warn(text: str) -> None:
    """A warning on stderr, worded as ``sendmail_say.warn``'s."""
    sys.stderr.write(f"sendmail: warning: {text}\n")
