"""A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test CA and a server certificate it issued.

    ``cert_pem`` holds the leaf certificate followed by its chain, ``key_pem`` its private
    key; both are valid for ``127.0.0.1`` and ``localhost``. Clients trust ``ca_pem``.
    """

    ca_pem: Path
    cert_pem: Path
    key_pem: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSLContext that serves the certificate (no client certificates asked for)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_pem, self.key_pem)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext that verifies servers against the test CA, hostname included."""
        return ssl.create_default_context(cafile=str(self.ca_pem))


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a fresh CA and a server certificate for 127.0.0.1/localhost in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="mapispool test CA")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        ca_pem=directory / "ca.pem",
        cert_pem=directory / "server-chain.pem",
        key_pem=directory / "server-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca_pem))
    leaf.private_key_pem.write_to_path(str(files.key_pem))
    with files.cert_pem.open("wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    files.key_pem.chmod(0o600)
    return files


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Session-wide test CA: ``ca_pem`` for clients, ``cert_pem``/``key_pem`` for servers.

    The server certificate names ``127.0.0.1`` and ``localhost``, so clients can keep
    hostname checking on. Nothing outside the session's tmp dir trusts this CA.
    """
    return make_tls_files(tmp_path_factory.mktemp("tls"))
