"""The curated public surface is pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

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


# -- layers (DESIGN §2): mapi <- store <- spi <- spooler <- session <- app <- cli/daemon/web --

PACKAGE_ROOT = Path(mapispool.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("mapispool", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every mapispool module and the mapispool modules it imports, read from the source:
    imports anywhere in a file count (inside functions and under TYPE_CHECKING too). A
    module's implicit import of its parent packages is not an edge."""
    files = {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edges.add(sub if sub in files else base)
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_session_and_app_import_nothing_above_them():
    """The session imports neither the application layer nor a front end; the
    application layer imports no front end (the daemon plugs its client mode in)."""
    graph = _import_graph()
    front_ends = ("mapispool.daemon", "mapispool.cli", "mapispool.web")
    for module, imports in graph.items():
        if _in(module, "mapispool.session"):
            assert not {i for i in imports if _in(i, "mapispool.app", *front_ends)}, module
        if _in(module, "mapispool.app"):
            assert not {i for i in imports if _in(i, *front_ends)}, module


def test_no_import_cycle():
    """No import cycle among mapispool's modules (TYPE_CHECKING and function-level
    imports included)."""
    assert _cycles(_import_graph()) == []


def test_the_upper_layers_keep_their_modules_small():
    """No module of the session, the application layer, the daemon or the command line
    is over 500 lines."""
    for package in ("session", "app", "daemon", "cli"):
        single = PACKAGE_ROOT / f"{package}.py"  # a package may start as one module
        for path in [
            *(PACKAGE_ROOT / package).rglob("*.py"),
            *([single] if single.exists() else []),
        ]:
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= 500, f"{path.relative_to(PACKAGE_ROOT)} has {lines} lines"


# -- one error tree under MapiError ---------------------------------------------------------


def test_every_public_error_type_is_a_mapi_error():
    """The error types users meet all derive from MapiError (``except MapiError`` is
    enough), and the lookup errors stay the LookupError/KeyError they were."""
    from mapispool.mapi.errors import NotFoundError
    from mapispool.store.sqlite.integrity import CorruptContent
    from mapispool.transports import ProviderNotFound
    from mapispool.transports.smtp.errors import SmtpError

    for error_type in (mapispool.ProfileError, ProviderNotFound, SmtpError, CorruptContent):
        assert issubclass(error_type, mapispool.MapiError), error_type
    assert issubclass(ProviderNotFound, LookupError)
    assert issubclass(NotFoundError, KeyError)


def test_an_unknown_provider_is_mapi_e_not_found():
    """resolve_provider's refusal is a MapiError with MAPI_E_NOT_FOUND and its one line."""
    from mapispool.mapi import MAPI_E_NOT_FOUND
    from mapispool.transports import ProviderNotFound, resolve_provider

    with pytest.raises(mapispool.MapiError) as refused:
        resolve_provider("no-such-provider")
    assert isinstance(refused.value, ProviderNotFound)
    assert refused.value.hresult == MAPI_E_NOT_FOUND
    assert "unknown provider 'no-such-provider'" in refused.value.message
    assert pickle.loads(pickle.dumps(refused.value)).message == refused.value.message


def test_an_unknown_transport_in_a_profile_is_mapi_e_not_found():
    """Profile.transport(name) for a name the profile lacks: a MapiError naming the
    transports there are (still a KeyError for code that caught that)."""
    from mapispool.mapi import MAPI_E_NOT_FOUND

    profile = mapispool.Profile.from_toml('[transports.out]\nprovider = "loopback"\n')
    with pytest.raises(mapispool.MapiError) as refused:
        profile.transport("other")
    assert refused.value.hresult == MAPI_E_NOT_FOUND
    assert isinstance(refused.value, KeyError)
    assert "no transport called 'other' in the profile; the transports are: out" in str(
        refused.value
    )


def test_the_session_uses_the_spooler_through_its_public_methods_only():
    """The session package touches the spooler only through these members (no logon
    handles, no runners, no private attributes), and spells no flag as a bare number."""
    allowed = {"status", "flush", "request_flush_of", "validate_state", "take_back_parked",
               "retry_requested", "queue_changed", "on_newmail", "start", "shutdown"}  # fmt: skip
    used: set[str] = set()
    for path in (PACKAGE_ROOT / "session").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"\b0x[0-9a-fA-F]+\b", source), f"{path.name}: name the flag"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute | ast.Name):
                owner = node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id
                if owner in ("spooler", "_spooler"):
                    used.add(node.attr)
    assert used <= allowed, used - allowed
