"""The built-in auth plug-ins on the wire, as websockify's: ``BasicHTTPAuth`` (``user:pass``, and
our password file of salted hashes), ``ExpectOrigin``, ``ClientCertCNAuth``; ``--web-auth``; and
the start-up errors. Real clients (websockets, websocket-client) and real TLS (trustme)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
import websocket  # websocket-client
from conftest import ROOT, EchoServer, ProxyProcess, raw_connect, read_http_head
from test_cli import run_cli
from test_tls import client_context, sync_safe
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wsproxy.plugins.passwords import make_hash, parse_hash, parse_password_file

WEB = str(ROOT / "web")
PASSWORD = "Tr0ub4dor&3"  # must never appear in a log line, nor its Basic form
REALM = 'Basic realm="Websockify"'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def echo_as(port: int, user: str, password: str, data: bytes = b"let me in") -> bytes:
    with connect(f"ws://{user}:{password}@127.0.0.1:{port}/", open_timeout=5) as ws:
        ws.send(data)
        return ws.recv(timeout=5)


def refused(url: str, **kwargs: object) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as exc_info, connect(url, open_timeout=5, **kwargs):
        pass
    return exc_info.value


def http_get(port: int, path: str = "/", headers: str = "") -> tuple[int, dict[str, str]]:
    with raw_connect(port) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
        )
        status, head, _ = read_http_head(sock)
        return status, head


def assert_secrets_not_logged(proc: ProxyProcess, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in proc.log
        assert base64.b64encode(secret.encode()).decode()[:12] not in proc.log
    assert "Authorization" not in proc.log


def test_basic_auth_with_user_and_password(
    run_proxy: type[ProxyProcess], echo_server: EchoServer
) -> None:
    args = ["--auth-plugin", "BasicHTTPAuth", "--auth-source", f"alice:{PASSWORD}"]
    proc = run_proxy(["127.0.0.1:0", echo_server.address, *args])
    assert echo_as(proc.port, "alice", PASSWORD) == b"let me in"
    for url in (proc.url, f"ws://alice:wrong@127.0.0.1:{proc.port}/"):
        error = refused(url)
        assert error.response.status_code == 401
        assert error.response.headers["WWW-Authenticate"] == REALM
    # Not Basic credentials, or undecodable ones: 403, as websockify answers them.
    for header in (
        "Bearer abc",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"nocolon").decode(),
    ):
        error = refused(proc.url, additional_headers={"Authorization": header})
        assert error.response.status_code == 403
    proc.wait_log(
        r"refused peer=127\.0\.0\.1:\d+ status=401 reason=\"BasicHTTPAuth: no credentials"
    )
    proc.wait_log(r"status=401 reason=\"BasicHTTPAuth: wrong password or unknown user 'alice'")
    proc.wait_log(r"status=403 reason=\"BasicHTTPAuth: credentials are not Basic")
    proc.wait_log(r"auth plugin=BasicHTTPAuth web_auth=no")
    proc.stop()
    assert_secrets_not_logged(proc, PASSWORD, f"alice:{PASSWORD}", "alice:wrong")


def test_websockify_module_path_names_the_built_in(
    run_proxy: type[ProxyProcess], echo_server: EchoServer
) -> None:
    name = "websockify.auth_plugins.BasicHTTPAuth"  # as websockify's own docs spell it
    proc = run_proxy(
        ["127.0.0.1:0", echo_server.address, "--auth-plugin", name, "--auth-source", "u:p"]
    )
    ws = websocket.create_connection(
        proc.url, header=[f"Authorization: {basic('u', 'p')}"], timeout=5
    )
    try:
        ws.send_binary(b"websocket-client")
        assert ws.recv() == b"websocket-client"
    finally:
        ws.close()


def password_line(user: str, password: str) -> str:
    """The documented one-liner: ``python3 -m wsproxy.plugins.passwords USER``."""
    result = subprocess.run(
        [sys.executable, "-m", "wsproxy.plugins.passwords", user],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    line = result.stdout.strip()
    assert line.startswith(f"{user}:$scrypt$ln=14,r=8,p=1$")
    assert password not in result.stdout
    return line


def test_basic_auth_with_a_password_file_reread_when_it_changes(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text("# wsproxy users\n" + password_line("alice", PASSWORD) + "\n")
    args = ["--auth-plugin", "BasicHTTPAuth", "--auth-source", str(users)]
    proc = run_proxy(["127.0.0.1:0", echo_server.address, *args])
    assert echo_as(proc.port, "alice", PASSWORD) == b"let me in"
    assert echo_as(proc.port, "alice", PASSWORD, b"again: remembered") == b"again: remembered"
    assert refused(f"ws://alice:{PASSWORD}x@127.0.0.1:{proc.port}/").response.status_code == 401
    assert refused(f"ws://bob:hunter22@127.0.0.1:{proc.port}/").response.status_code == 401
    # A pbkdf2 line, added while it runs: picked up without a restart.
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", b"hunter22", salt, 1000)
    with users.open("a") as f:
        f.write(f"bob:$pbkdf2-sha256$1000${unpadded(salt)}${unpadded(key)}\n")
    assert echo_as(proc.port, "bob", "hunter22") == b"let me in"
    proc.wait_log(r"password file reloaded file=\S+users users=2")
    # Removing a user takes effect too, even for the remembered credentials; a bad line is
    # skipped and logged (it stops only a start).
    users.write_text(password_line("bob", "hunter22") + "\ncarol:clear-text\n")
    assert refused(f"ws://alice:{PASSWORD}@127.0.0.1:{proc.port}/").response.status_code == 401
    assert echo_as(proc.port, "bob", "hunter22") == b"let me in"
    proc.wait_log(r"password file line skipped file=\S+users line=2 reason=")
    proc.stop()
    assert_secrets_not_logged(proc, PASSWORD, "hunter22", "clear-text")


def unpadded(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def test_a_bad_password_file_line_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    hashed = make_hash("pw", log_n=4)
    users.write_text(f"alice:{hashed}\nbob:plain-text-password\n")
    result = run_cli(
        "127.0.0.1:0", "127.0.0.1:1", "--auth-plugin", "BasicHTTPAuth", "--auth-source", str(users)
    )
    assert result.returncode == 2
    assert f"{users}:2: auth_source: bad line" in result.stderr
    assert "plain-text-password" not in result.stderr
    assert "python3 -m wsproxy.plugins.passwords USER" in result.stderr


def test_password_hashes_parse_and_verify() -> None:
    hashed = parse_hash(make_hash("é s3cret", log_n=4))
    assert hashed.verify("é s3cret")
    assert not hashed.verify("é s3cre")
    for bad in (
        "$scrypt$ln=40,r=8,p=1$c2FsdA$" + "A" * 43,
        "$md5$x$y$z",
        "plain",
        "$pbkdf2-sha256$0$c2FsdA$" + "A" * 43,
    ):
        with pytest.raises(ValueError):
            parse_hash(bad)
    table, errors = parse_password_file("# c\n\nnocolon\nu:$scrypt$bad\n")
    assert table == {}
    assert [n for n, _ in errors] == [3, 4]


def test_expect_origin(run_proxy: type[ProxyProcess], echo_server: EchoServer) -> None:
    allowed = "https://a.example https://b.example"
    proc = run_proxy(
        [
            "127.0.0.1:0",
            echo_server.address,
            "--auth-plugin",
            "ExpectOrigin",
            "--auth-source",
            allowed,
        ]
    )
    with connect(proc.url, origin="https://b.example", open_timeout=5) as ws:
        ws.send(b"from b")
        assert ws.recv(timeout=5) == b"from b"
    for origin in ("https://evil.example", None):
        kwargs = {"origin": origin} if origin else {}
        assert refused(proc.url, **kwargs).response.status_code == 403
    proc.wait_log(
        r"status=403 reason=\"ExpectOrigin: Invalid Origin Header: Expected one of .*'https://evil\.example'"
    )


def test_client_cert_cn_auth(
    run_proxy: type[ProxyProcess], pki: dict[str, str], ca: trustme.CA, echo_server: EchoServer
) -> None:
    tls = ["--cert", pki["server"], "--verify-client", "--cafile", pki["ca"]]
    auth = ["--auth-plugin", "ClientCertCNAuth", "--auth-source", "alice carol"]
    proc = run_proxy(["127.0.0.1:0", echo_server.address, *tls, *auth])
    url = f"wss://127.0.0.1:{proc.port}/"

    def as_cn(name: str) -> object:
        context = sync_safe(client_context(ca))
        ca.issue_cert(f"{name}.example.test", common_name=name).configure_cert(context)
        return context

    with connect(url, ssl=as_cn("carol"), open_timeout=5) as ws:
        ws.send(b"carol")
        assert ws.recv(timeout=5) == b"carol"
    assert refused(url, ssl=as_cn("mallory")).response.status_code == 403
    # A client cannot name itself: the SSL_ headers it sends are dropped, in any case.
    for name in ("SSL_CLIENT_S_DN_CN", "ssl_client_s_dn_cn"):
        forged = refused(url, ssl=as_cn("mallory"), additional_headers={name: "alice"})
        assert forged.response.status_code == 403
    proc.wait_log(
        r"status=403 reason=\"ClientCertCNAuth: client certificate CN 'mallory' not allowed"
    )


def test_client_cert_cn_auth_needs_verify_client(pki: dict[str, str]) -> None:
    auth = ["--auth-plugin", "ClientCertCNAuth", "--auth-source", "alice"]
    result = run_cli("127.0.0.1:0", "127.0.0.1:1", "--cert", pki["server"], *auth)
    assert result.returncode == 2
    assert "needs a verified client certificate" in result.stderr
    assert "verify_client" in result.stderr


def test_web_auth_asks_the_plug_in_for_every_web_request(
    run_proxy: type[ProxyProcess], echo_server: EchoServer
) -> None:
    auth = ["--auth-plugin", "BasicHTTPAuth", "--auth-source", f"alice:{PASSWORD}", "--web", WEB]
    guarded = run_proxy(["127.0.0.1:0", echo_server.address, *auth, "--web-auth"])
    status, head = http_get(guarded.port)
    assert (status, head["www-authenticate"]) == (401, REALM)
    credentials = f"Authorization: {basic('alice', PASSWORD)}\r\n"
    assert http_get(guarded.port, "/", credentials)[0] == 200
    # Kept alive: the second request on the connection is checked on its own.
    with raw_connect(guarded.port) as sock:
        first = f"GET / HTTP/1.1\r\nHost: x\r\n{credentials}\r\n"
        sock.sendall((first + "GET / HTTP/1.1\r\nHost: x\r\n\r\n").encode())
        status, head, rest = read_http_head(sock)
        assert status == 200
        body = rest
        while len(body) < int(head["content-length"]) + 12:
            body += sock.recv(65536)
        assert b"HTTP/1.1 401 Unauthorized" in body[int(head["content-length"]) :]
    guarded.wait_log(
        r"web peer=\S+ method=GET path=/ status=401 bytes=0 reason=\"BasicHTTPAuth: no credentials"
    )
    # Without --web-auth the web server is open, the WebSocket is not.
    open_web = run_proxy(["127.0.0.1:0", echo_server.address, *auth])
    assert http_get(open_web.port)[0] == 200
    assert refused(open_web.url).response.status_code == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--auth-plugin", "NoSuchPlugin"],
            "auth_plugin: unknown auth plug-in 'NoSuchPlugin' (expected one of BasicHTTPAuth",
        ),
        (
            ["--auth-plugin", "no_such_module.Auth"],
            "auth_plugin: cannot load auth plug-in no_such_module.Auth: No module named",
        ),
        (
            ["--auth-plugin", "wsproxy.plugins.auth.Nope"],
            "auth_plugin: module wsproxy.plugins.auth has no class Nope",
        ),
        (["--auth-plugin", "logging.Logger"], "has no authenticate() method"),
        (
            ["--auth-plugin", "BasicHTTPAuth"],
            "auth_source: plug-in BasicHTTPAuth refused its source: ValueError: BasicHTTPAuth",
        ),
        (
            ["--auth-plugin", "BasicHTTPAuth", "--auth-source", "s3cret-no-colon"],
            "neither user:password",
        ),
        (["--auth-source", "s3cret:x"], "auth_source needs auth_plugin"),
        (["--web-auth", "--web", WEB], "web_auth needs auth_plugin"),
        (["--web-auth", "--auth-plugin", "ExpectOrigin"], "web_auth needs web"),
    ],
)
def test_auth_configuration_errors_exit_2_without_the_source(args: list[str], message: str) -> None:
    result = run_cli("127.0.0.1:0", "127.0.0.1:1", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr
