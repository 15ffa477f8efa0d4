"""websockify's TLS options toward clients, on the wire: ``--key-password``, ``--ssl-version``,
``--ssl-ciphers`` and ``--verify-client`` without ``--cafile`` (the system's CAs). A trustme CA,
real clients (websockets, Python ``ssl``)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import trustme
from conftest import EchoServer, ProxyProcess
from cryptography.hazmat.primitives import serialization
from test_cli import run_cli
from test_tls import REFUSED, assert_wss_echoes, client_context, https_get
from websockets.sync.client import connect

PASSWORD = "correct horse battery staple"


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, str | None]:
    """TLS version and cipher the proxy agrees to with ``context``."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        cipher = sock.cipher()
        return sock.version(), cipher[0] if cipher else None


def only(ca: trustme.CA, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = client_context(ca)
    context.minimum_version = context.maximum_version = version
    return context


@pytest.fixture(scope="module")
def encrypted_key(pki: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    key = serialization.load_pem_private_key(Path(pki["key"]).read_bytes(), password=None)
    path = tmp_path_factory.mktemp("key") / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return str(path)


def test_key_password_opens_an_encrypted_key_and_is_never_logged(
    run_proxy: type[ProxyProcess],
    pki: dict[str, str],
    ca: trustme.CA,
    encrypted_key: str,
    echo_server: EchoServer,
) -> None:
    args = ["--cert", pki["cert"], "--key", encrypted_key, "--key-password", PASSWORD, "-v"]
    proc: ProxyProcess = run_proxy(["127.0.0.1:0", echo_server.address, *args])
    assert_wss_echoes(proc.port, client_context(ca), b"encrypted key")
    proc.stop()
    assert PASSWORD not in proc.log
    assert "horse" not in proc.log


def test_a_wrong_key_password_exits_2_without_showing_it(
    pki: dict[str, str],
    encrypted_key: str,
) -> None:
    args = ["--cert", pki["cert"], "--key", encrypted_key, "--key-password", "wrong-guess-42"]
    result = run_cli("127.0.0.1:0", "127.0.0.1:1", *args)
    assert result.returncode == 2, result.stderr
    assert encrypted_key in result.stderr
    assert "wrong-guess-42" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize(
    ("version", "refused", "accepted"),
    [
        ("default", ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2),
        ("tlsv1_1", ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2),
        ("tlsv1_2", ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2),
        ("tlsv1_3", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
    ],
)
def test_ssl_version_is_the_lowest_version_accepted(
    run_proxy: type[ProxyProcess],
    pki: dict[str, str],
    ca: trustme.CA,
    echo_server: EchoServer,
    version: str,
    refused: ssl.TLSVersion,
    accepted: ssl.TLSVersion,
) -> None:
    proc = run_proxy(
        ["127.0.0.1:0", echo_server.address, "--cert", pki["server"], "--ssl-version", version]
    )
    old = only(ca, refused)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # a client that would take TLS 1.0/1.1 ciphers
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(proc.port, old)
    assert handshake(proc.port, only(ca, accepted))[0] == accepted.name.replace("_", ".")
    assert handshake(proc.port, client_context(ca))[0] == "TLSv1.3"
    warned = "tlsv1_1: TLS 1.1 is deprecated (RFC 8996) and not offered" in proc.log
    assert warned == (version == "tlsv1_1")


def test_ssl_ciphers_limits_the_tls_1_2_ciphers(
    run_proxy: type[ProxyProcess],
    pki: dict[str, str],
    ca: trustme.CA,
    echo_server: EchoServer,
) -> None:
    chosen = "ECDHE-ECDSA-AES128-GCM-SHA256"  # trustme's keys are ECDSA
    proc = run_proxy(
        ["127.0.0.1:0", echo_server.address, "--cert", pki["server"], "--ssl-ciphers", chosen]
    )
    context = only(ca, ssl.TLSVersion.TLSv1_2)
    assert handshake(proc.port, context) == ("TLSv1.2", chosen)
    other = only(ca, ssl.TLSVersion.TLSv1_2)
    other.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305")
    with pytest.raises(ssl.SSLError):
        handshake(proc.port, other)
    proc.wait_log(r'refused peer=\S+ reason="TLS handshake failed: \w+')


def test_an_ssl_ciphers_list_openssl_refuses_exits_2(pki: dict[str, str]) -> None:
    result = run_cli("127.0.0.1:0", "127.0.0.1:1", "--cert", pki["server"], "--ssl-ciphers", "NOPE")
    assert result.returncode == 2
    assert "ssl_ciphers" in result.stderr
    assert "openssl ciphers" in result.stderr


def test_verify_client_without_cafile_trusts_the_system_cas(
    run_proxy: type[ProxyProcess],
    pki: dict[str, str],
    ca: trustme.CA,
    echo_server: EchoServer,
) -> None:
    # OpenSSL's default verify paths honour SSL_CERT_FILE: a "system store" holding the test CA.
    args = ["127.0.0.1:0", echo_server.address, "--cert", pki["server"], "--verify-client"]
    proc = run_proxy(args, env={"SSL_CERT_FILE": pki["ca"], "SSL_CERT_DIR": "/nonexistent"})
    with_cert = client_context(ca)
    ca.issue_cert("client.example.test").configure_cert(with_cert)
    assert_wss_echoes(proc.port, with_cert, b"system CA")
    with (
        pytest.raises(REFUSED),
        connect(f"wss://127.0.0.1:{proc.port}/", ssl=client_context(ca), open_timeout=5) as ws,
    ):
        ws.recv(timeout=5)
    # The real system store does not hold the test CA: its client certificates are refused.
    strict = run_proxy(args)
    with pytest.raises(REFUSED):
        https_get(strict.port, with_cert)
    strict.wait_log(r'refused peer=\S+ reason="TLS handshake failed: \w+')
