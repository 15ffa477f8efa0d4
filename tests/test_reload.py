"""SIGHUP reloads the configuration: the ``-c`` file and the files it names, on the wire.

New connections see the new configuration; open sessions keep theirs; a bad edit changes nothing
and one log line names the file and the key; restart-only settings keep their running value."""

from __future__ import annotations

import base64
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme
from conftest import EchoServer, wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

RELOAD_WITHIN = 3.0  # seconds a reloaded setting may take to reach new connections


def write_ini(path: Path, target: str, listen: str = "127.0.0.1:0", **keys: str) -> None:
    lines = ["[wsproxy]", f"listen = {listen}", f"target = {target}"]
    lines += [f"{key} = {value}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")


def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def pem_to_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def test_new_certificate_reaches_new_connections_and_open_session_keeps_relaying(
    run_proxy, echo_server: EchoServer, tmp_path: Path
) -> None:
    ca = trustme.CA()
    old, new = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    cert = tmp_path / "server.pem"
    old.private_key_and_cert_chain_pem.write_to_path(str(cert))
    ini = tmp_path / "w.ini"
    write_ini(ini, echo_server.address, cert="server.pem")
    proxy = run_proxy(["-c", "w.ini"], cwd=tmp_path)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # websockets' sync client: see test_tls
    old_der = pem_to_der(old.cert_chain_pems[0].bytes())
    new_der = pem_to_der(new.cert_chain_pems[0].bytes())
    assert served_certificate(proxy.port, context) == old_der
    with connect(f"wss://127.0.0.1:{proxy.port}/", ssl=context, open_timeout=5) as ws:
        new.private_key_and_cert_chain_pem.write_to_path(str(cert))
        proxy.proc.send_signal(signal.SIGHUP)
        started = time.monotonic()
        wait_until(
            lambda: served_certificate(proxy.port, context) == new_der,
            timeout=RELOAD_WITHIN,
            what="the new certificate on a new connection",
        )
        assert time.monotonic() - started < RELOAD_WITHIN
        for n in range(3):  # the session opened before the reload relays on
            ws.send(b"still here %d" % n)
            assert ws.recv(timeout=5) == b"still here %d" % n
    proxy.wait_log(r"reloaded targets=.* changed=none$")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_edit_keeps_serving_and_one_line_names_file_and_key(
    run_proxy, echo_server: EchoServer, tmp_path: Path, workers: str
) -> None:
    ini = tmp_path / "w.ini"
    write_ini(ini, echo_server.address, workers=workers)
    proxy = run_proxy(["-c", str(ini)], cwd=tmp_path)
    write_ini(ini, echo_server.address, workers=workers, handshake_timeout="soon")
    proxy.proc.send_signal(signal.SIGHUP)
    match = proxy.wait_log(r"reload failed, still serving.*")
    line = match.group(0)
    assert f"{ini}:5: handshake_timeout" in line and "expected seconds above 0" in line
    assert sum("reload failed" in entry for entry in proxy.lines) == 1  # the master only
    with connect(proxy.url, open_timeout=5) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=5) == b"ping"
    assert not any("reloaded" in entry for entry in proxy.lines)  # no worker was told


@pytest.mark.parametrize("workers", ["1", "2"])
def test_origin_added_to_the_file_gets_101_and_restart_only_change_is_kept(
    run_proxy, echo_server: EchoServer, tmp_path: Path, workers: str
) -> None:
    ini = tmp_path / "w.ini"
    write_ini(ini, echo_server.address, origins="https://a.example", workers=workers)
    proxy = run_proxy(["-c", "w.ini"], cwd=tmp_path)
    url = proxy.url
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin="https://b.example", open_timeout=5)
    assert refused.value.response.status_code == 403
    write_ini(
        ini,
        echo_server.address,
        origins="https://a.example https://b.example",
        workers=workers,
        key_password="hunter2",
        listen="127.0.0.1:1",
    )
    proxy.proc.send_signal(signal.SIGHUP)
    switched = int(workers) + (int(workers) > 1)  # each worker, and the master that checked
    wait_until(
        lambda: sum("reloaded targets=" in line for line in proxy.lines) == switched,
        what="every process to reload",
    )
    for _ in range(4):
        with connect(url, origin="https://b.example", open_timeout=5) as ws:
            ws.send(b"hello")
            assert ws.recv(timeout=5) == b"hello"
    proxy.wait_log(r"reload: listen changed, which needs a restart")
    reloaded = proxy.wait_log(r"reloaded targets=.* changed=.*").group(0)
    assert "origins='https://a.example https://b.example'" in reloaded
    assert "key_password=(hidden)" in reloaded
    assert "hunter2" not in proxy.log


def test_new_auth_source_applies_to_new_clients(
    run_proxy, echo_server: EchoServer, tmp_path: Path
) -> None:
    ini = tmp_path / "w.ini"
    write_ini(ini, echo_server.address, auth_plugin="BasicHTTPAuth", auth_source="ann:old")
    proxy = run_proxy(["-c", "w.ini"], cwd=tmp_path)

    def status(user_password: str) -> int:
        token = base64.b64encode(user_password.encode()).decode()
        try:
            with connect(proxy.url, additional_headers={"Authorization": f"Basic {token}"}):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert (status("ann:old"), status("ann:new")) == (101, 401)
    write_ini(ini, echo_server.address, auth_plugin="BasicHTTPAuth", auth_source="ann:new")
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.wait_log(r"reloaded targets=.* changed=auth_source=\(hidden\)$")
    assert (status("ann:old"), status("ann:new")) == (401, 101)
    assert "ann:new" not in proxy.log
