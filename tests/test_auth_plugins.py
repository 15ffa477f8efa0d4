"""A user's own auth plug-in, loaded by dotted path through the real command line, with
websockify's contract: ``Class(src)``, ``authenticate(headers, target_host, target_port)``, and an
``AuthenticationError`` carrying status, headers and message; the target it is told (fixed, from
a token); a plug-in that blocks (off the event loop, bounded) or crashes."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, EchoServer, ProxyProcess, raw_connect, read_http_head
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

# Written for websockify: its own AuthenticationError shape, defined here because websockify is
# not installed (a plug-in importing websockify.auth_plugins raises the same attributes).
PLUGIN = textwrap.dedent(
    """
    import json, os, time

    from wsproxy.plugins.auth import AuthenticationError as WsproxyError


    class AuthenticationError(Exception):
        def __init__(self, log_msg=None, response_code=403, response_headers={},
                     response_msg=None):
            self.code = response_code
            self.headers = response_headers
            self.msg = response_msg
            if log_msg is None:
                log_msg = response_msg
            super().__init__('%s %s' % (self.code, log_msg))


    class TicketAuth:
        def __init__(self, src=None):
            self.src = src

        def authenticate(self, headers, target_host, target_port):
            with open(os.environ["CALLS"], "a") as f:
                f.write(json.dumps([headers.get("x-ticket"), target_host, target_port]) + "\\n")
            if headers.get("X-Slow"):
                time.sleep(float(headers["X-Slow"]))
            if headers.get("X-Crash"):
                raise KeyError("a bug in the plug-in")
            if headers.get("X-Ticket") != self.src:
                raise AuthenticationError(
                    log_msg="ticket %r refused" % headers.get("X-Ticket"),
                    response_headers={"X-Why": "ticket", "X-Evil": "a\\r\\nSet-Cookie: x=1"},
                    response_msg="Ticket refused",
                )


    class LoginFirst:
        blocking = False

        def __init__(self, src=None):
            self.login = src

        def authenticate(self, headers, target_host, target_port):
            if headers.get("Cookie") != "session=ok":
                raise WsproxyError(response_code=302, response_headers={"Location": self.login})
    """
)


@pytest.fixture
def plugin_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "myauth.py").write_text(PLUGIN)
    yield {"PYTHONPATH": str(tmp_path), "CALLS": str(tmp_path / "calls.jsonl")}


def calls(env: dict[str, str]) -> list[list[object]]:
    path = Path(env["CALLS"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ticket_proxy(
    run_proxy: type[ProxyProcess], env: dict[str, str], *args: str, **kwargs: object
) -> ProxyProcess:
    return run_proxy(
        [*args, "--auth-plugin", "myauth.TicketAuth", "--auth-source", "t-42"], env=env, **kwargs
    )


def test_a_websockify_style_plug_in_by_dotted_path(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, plugin_env: dict[str, str]
) -> None:
    proc = ticket_proxy(run_proxy, plugin_env, "127.0.0.1:0", echo_server.address)
    with connect(proc.url, additional_headers={"X-Ticket": "t-42"}, open_timeout=5) as ws:
        ws.send(b"ticketed")
        assert ws.recv(timeout=5) == b"ticketed"
    with (
        pytest.raises(InvalidStatus) as exc_info,
        connect(proc.url, additional_headers={"X-Ticket": "t-0"}, open_timeout=5),
    ):
        pass
    response = exc_info.value.response
    assert response.status_code == 403
    assert response.body == b"Ticket refused\n"
    assert response.headers["X-Why"] == "ticket"
    assert "X-Evil" not in response.headers  # a header that would split the answer is dropped
    assert "Set-Cookie" not in response.headers
    host, port = echo_server.address.split(":")
    assert calls(plugin_env) == [["t-42", host, int(port)], ["t-0", host, int(port)]]
    proc.wait_log(r"refused peer=\S+ status=403 reason=\"TicketAuth: 403 ticket 't-0' refused\"")
    proc.wait_log(r"auth header dropped plugin=TicketAuth header='X-Evil'")


def test_the_plug_in_is_told_the_target_a_token_chose(
    run_proxy: type[ProxyProcess],
    echo_server: EchoServer,
    plugin_env: dict[str, str],
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.cfg"
    tokens.write_text(f"vnc1: {echo_server.address}\n")
    proc = ticket_proxy(run_proxy, plugin_env, "--token-source", str(tokens), "127.0.0.1:0")
    url = f"ws://127.0.0.1:{proc.port}/websockify?token=vnc1"
    with connect(url, additional_headers={"X-Ticket": "t-42"}, open_timeout=5) as ws:
        ws.send(b"by token")
        assert ws.recv(timeout=5) == b"by token"
    host, port = echo_server.address.split(":")
    assert calls(plugin_env) == [["t-42", host, int(port)]]
    # An unknown token is refused by the lookup first: the plug-in is not asked.
    with pytest.raises(InvalidStatus) as exc_info, connect(url.replace("vnc1", "nope")):
        pass
    assert exc_info.value.response.status_code == 404
    assert len(calls(plugin_env)) == 1


def test_a_unix_target_is_told_as_none(
    run_proxy: type[ProxyProcess], plugin_env: dict[str, str], tmp_path: Path
) -> None:
    path = str(tmp_path / "target.sock")
    proc = ticket_proxy(run_proxy, plugin_env, "--unix-target", path, "127.0.0.1:0")
    with pytest.raises(InvalidStatus) as exc_info, connect(proc.url, open_timeout=5):
        pass
    assert exc_info.value.response.status_code == 403  # refused before the (absent) socket
    assert calls(plugin_env) == [[None, None, None]]


def test_a_blocking_plug_in_stalls_only_its_own_client(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, plugin_env: dict[str, str]
) -> None:
    proc = ticket_proxy(
        run_proxy, plugin_env, "127.0.0.1:0", echo_server.address, "--handshake-timeout", "3"
    )
    answers: dict[str, Any] = {}

    def slow_client() -> None:
        started = time.monotonic()
        headers = {"X-Ticket": "t-42", "X-Slow": "6"}
        try:
            with connect(proc.url, additional_headers=headers, open_timeout=10):
                answers["slow"] = "opened"
        except InvalidStatus as exc:
            answers["slow"] = exc.response.status_code
        answers["slow_secs"] = time.monotonic() - started

    thread = threading.Thread(target=slow_client)
    thread.start()
    time.sleep(0.2)  # the slow one is in its plug-in call now
    started = time.monotonic()
    with connect(proc.url, additional_headers={"X-Ticket": "t-42"}, open_timeout=5) as ws:
        ws.send(b"not held up")
        assert ws.recv(timeout=5) == b"not held up"
    assert time.monotonic() - started < 2  # not after the slow one's 3 s
    thread.join(10)
    assert answers["slow"] == 503
    assert 2.5 < answers["slow_secs"] < 5
    proc.wait_log(r"status=503 reason=\"TicketAuth did not answer within [23]\.\d+s\"")


def test_a_crashing_plug_in_is_500_and_logged(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, plugin_env: dict[str, str]
) -> None:
    proc = ticket_proxy(run_proxy, plugin_env, "127.0.0.1:0", echo_server.address)
    headers = {"X-Ticket": "t-42", "X-Crash": "1"}
    with pytest.raises(InvalidStatus) as exc_info, connect(proc.url, additional_headers=headers):
        pass
    assert exc_info.value.response.status_code == 500
    proc.wait_log(r"ERROR .*auth plug-in failed peer=\S+ plugin=TicketAuth")
    proc.wait_log(r"KeyError: 'a bug in the plug-in'")
    with connect(proc.url, additional_headers={"X-Ticket": "t-42"}, open_timeout=5) as ws:
        ws.send(b"still serving")
        assert ws.recv(timeout=5) == b"still serving"


def test_a_plug_in_raising_our_error_can_redirect_web_requests(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, plugin_env: dict[str, str]
) -> None:
    web = ["--web", str(ROOT / "web"), "--web-auth"]
    auth = ["--auth-plugin", "myauth.LoginFirst", "--auth-source", "/login.html"]
    proc = run_proxy(["127.0.0.1:0", echo_server.address, *web, *auth], env=plugin_env)
    for cookie, expected in (("", 302), ("Cookie: session=ok\r\n", 200)):
        with raw_connect(proc.port) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{cookie}Connection: close\r\n\r\n".encode())
            status, head, _ = read_http_head(sock)
        assert status == expected
        if status == 302:
            assert head["location"] == "/login.html"
    assert calls(plugin_env) == []  # LoginFirst does not record
    proc.wait_log(r"web peer=\S+ method=GET path=/ status=302 bytes=0 reason=\"LoginFirst: Found\"")


def readme_example() -> tuple[str, list[str]]:
    """The README's runnable auth plug-in: the ``myauth.py`` block and its command line."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("A runnable example, `myauth.py`") :]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shell = section.split("```sh\n", 1)[1].split("```", 1)[0]
    command = shell.splitlines()[0]
    assert command.startswith("PYTHONPATH=. wsproxy ")
    return code, command.split()[2:]


def test_the_readme_example_plug_in_runs(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, tmp_path: Path
) -> None:
    code, args = readme_example()
    (tmp_path / "myauth.py").write_text(code)
    assert args[-2:] == ["6080", "localhost:5900"]
    proc = run_proxy(
        [*args[:-2], "127.0.0.1:0", echo_server.address], cwd=tmp_path, env={"PYTHONPATH": "."}
    )
    with connect(proc.url, additional_headers={"X-Ticket": "s3cret"}, open_timeout=5) as ws:
        ws.send(b"from the README")
        assert ws.recv(timeout=5) == b"from the README"
    with pytest.raises(InvalidStatus) as exc_info, connect(proc.url, open_timeout=5):
        pass
    assert exc_info.value.response.status_code == 403
    assert exc_info.value.response.body == b"ticket refused\n"
    host, port = echo_server.address.split(":")
    proc.wait_log(rf'status=403 reason="TicketAuth: bad ticket for {host}:{port}"')
