"""BaseTokenAPI and JSONTokenApi against a real local HTTP server, through the command line."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import echo_once, refused_start, upgrade_status
from websockets.sync.client import connect


class TokenAPI(ThreadingHTTPServer):
    """Answers ``/text/TOKEN`` with ``host:port``, ``/json/TOKEN`` with JSON, for the tokens in
    ``targets``; a token starting with ``slow`` after ``SLOW`` seconds; ``/error/...`` with 500."""

    daemon_threads = True
    SLOW = 4.0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.targets: dict[str, str] = {}
        self.paths: list[str] = []
        self.authorizations: list[str | None] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Handler(BaseHTTPRequestHandler):
    server: TokenAPI

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        kind, _, token = self.path.lstrip("/").partition("/")
        self.server.authorizations.append(self.headers.get("Authorization"))
        if token.startswith("slow"):
            time.sleep(TokenAPI.SLOW)
        target = self.server.targets.get(token)
        if kind == "error":
            self._answer(500, b"database down")
        elif target is None:
            self._answer(404, b"no such token")
        elif kind == "json":
            host, port = target.rsplit(":", 1)
            self._answer(200, json.dumps({"host": host, "port": int(port)}).encode())
        else:
            self._answer(200, target.encode() + b"\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api(echo_server) -> Iterator[TokenAPI]:
    server = TokenAPI()
    server.targets["vnc"] = echo_server.address
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("plugin", "path"), [("BaseTokenAPI", "text"), ("JSONTokenApi", "json")])
def test_api_answers_choose_the_target(run_proxy, api: TokenAPI, plugin: str, path: str) -> None:
    proc = run_proxy(
        ["--token-plugin", plugin, "--token-source", f"{api.url}/{path}/%s", "127.0.0.1:0"]
    )
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=vnc", b"api") == b"api"
    assert upgrade_status(proc.port, "/?token=nope") == (404, b"unknown token 'nope'\n")
    assert api.paths == [f"/{path}/vnc", f"/{path}/nope"]


def test_answers_are_cached_briefly(run_proxy, api: TokenAPI) -> None:
    proc = run_proxy(
        ["--token-plugin", "JSONTokenApi", "--token-source", f"{api.url}/json/%s", "127.0.0.1:0"]
    )
    for _ in range(3):
        assert upgrade_status(proc.port, "/?token=vnc")[0] == 101
    for _ in range(2):  # "not found" is not cached: a token created next is found at once
        assert upgrade_status(proc.port, "/?token=new")[0] == 404
    assert api.paths == ["/json/vnc", "/json/new", "/json/new"]


def test_credentials_in_the_url_are_basic_auth_and_never_shown(run_proxy, api: TokenAPI) -> None:
    url = api.url.replace("http://", "http://ops:s%%40cret@")
    proc = run_proxy(
        ["--token-plugin", "BaseTokenAPI", "--token-source", f"{url}/text/%s", "127.0.0.1:0"]
    )
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=vnc", b"api") == b"api"
    assert api.paths == ["/text/vnc"]
    assert api.authorizations == ["Basic b3BzOnNAY3JldA=="]  # base64 of ops:s@cret
    host = api.url.removeprefix("http://")
    assert f"by token from {host} (BaseTokenAPI)" in proc.log
    assert "cret" not in proc.log and "ops:" not in proc.log


def test_the_token_cannot_change_the_url(run_proxy, api: TokenAPI) -> None:
    proc = run_proxy(
        ["--token-plugin", "BaseTokenAPI", "--token-source", f"{api.url}/text/%s", "127.0.0.1:0"]
    )
    assert upgrade_status(proc.port, "/?token=..%2Fjson%2Fvnc%3Fa%3Db")[0] == 404
    assert api.paths == ["/text/..%2Fjson%2Fvnc%3Fa%3Db"]


def test_a_failing_api_is_a_502(run_proxy, api: TokenAPI) -> None:
    proc = run_proxy(
        ["--token-plugin", "BaseTokenAPI", "--token-source", f"{api.url}/error/%s", "127.0.0.1:0"]
    )
    assert upgrade_status(proc.port, "/?token=vnc") == (502, b"token lookup failed\n")
    proc.wait_log(
        r"token lookup failed plugin=BaseTokenAPI token='vnc': OSError: "
        r"token API answered 500"
    )


def test_a_hanging_api_times_out_while_others_relay(run_proxy, api: TokenAPI) -> None:
    api.targets["slowvnc"] = api.targets["vnc2"] = api.targets["vnc"]
    proc = run_proxy(
        [
            "--token-plugin",
            "BaseTokenAPI",
            "--token-source",
            f"{api.url}/text/%s",
            "--connect-timeout",
            "1.5",
            "127.0.0.1:0",
        ]
    )
    result: dict[str, object] = {}

    def slow() -> None:
        result["slow"] = upgrade_status(proc.port, "/?token=slowvnc")
        result["slow_done"] = time.monotonic()

    with connect(f"ws://127.0.0.1:{proc.port}/?token=vnc", open_timeout=10) as ws:
        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.3)
        ws.send(b"still relaying")
        assert ws.recv(timeout=5) == b"still relaying"
        assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=vnc2") == b"ping"  # a new request
        fast_done = time.monotonic()
        thread.join(10)
    assert result["slow"] == (502, b"token lookup timed out after 1.5 s\n")
    assert isinstance(slow_done := result["slow_done"], float) and fast_done < slow_done
    assert api.paths == ["/text/vnc", "/text/slowvnc", "/text/vnc2"]


@pytest.mark.parametrize("source", ["ftp://h/%s", "http://h/no-placeholder", "http://h/%d/%s"])
def test_bad_url_exits_2(run_proxy, source: str) -> None:
    log = refused_start(
        run_proxy, ["--token-plugin", "JSONTokenApi", "--token-source", source, "127.0.0.1:0"]
    )
    assert "token_source: JSONTokenApi needs a URL (expected an http:// or https:// URL" in log
