"""The mini web server on the wire (``--web DIR``): a real wsproxy process and raw sockets.

Traversal attempts run against a root with a secret file next to it and symlinks pointing out;
nothing outside the root may come back. Range, 304, HEAD and keep-alive are checked on the wire,
and a 100 MiB file is served while the proxy's memory stays flat.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ProxyProcess, read_http_head, read_until_closed
from test_cli import run_cli

SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
INDEX = b"<!DOCTYPE html><title>root index</title>\n"
A_TXT = b"0123456789abcdefghijklmnopqrstuvwxyz\n"


class HttpConn:
    """One client connection that sends requests and reads responses by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffered = b""

    def request(
        self, target: str, method: str = "GET", headers: tuple[str, ...] = (), version: str = "1.1"
    ) -> None:
        head = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", *headers]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffered:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed before a response head"
            self.buffered += chunk
        head, _, self.buffered = self.buffered.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        size = 0 if head_only or status == 304 else int(headers.get("content-length", "0"))
        while len(self.buffered) < size:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed inside a body"
            self.buffered += chunk
        body, self.buffered = self.buffered[:size], self.buffered[size:]
        return status, headers, body

    def get(
        self, target: str, *headers: str, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        self.request(target, method, headers)
        return self.response(head_only=method == "HEAD")

    def closed_by_server(self) -> bool:
        return self.buffered == b"" and read_until_closed(self.sock) == b""

    def close(self) -> None:
        self.sock.close()


def fetch(port: int, target: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """One GET on a connection of its own."""
    conn = HttpConn(port)
    try:
        return conn.get(target, *headers)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("site")
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    root = base / "root"
    root.mkdir()
    (root / "index.html").write_bytes(INDEX)
    (root / "a.txt").write_bytes(A_TXT)
    (root / "style.css").write_bytes(b"body{}\n")
    (root / "app.js").write_bytes(b"1;\n")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"sub index\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (root / "noindex").mkdir()
    (root / "noindex" / "c.txt").write_bytes(b"c\n")
    (root / ".hidden").write_bytes(SECRET)
    (root / "link-out").symlink_to(base / "secret.txt")
    (root / "dirlink-out").symlink_to(base / "outside")
    (root / "rel-link-out").symlink_to("../secret.txt")
    (root / "link-in").symlink_to("a.txt")
    os.mkfifo(root / "fifo")
    return base


@pytest.fixture(scope="module")
def web(site: Path, echo_server) -> Iterator[ProxyProcess]:  # type: ignore[no-untyped-def]
    proc = ProxyProcess(["127.0.0.1:0", echo_server.address, "--web", str(site / "root")])
    yield proc
    proc.stop()


@pytest.fixture
def conn(web: ProxyProcess) -> Iterator[HttpConn]:
    c = HttpConn(web.port)
    yield c
    c.close()


# -- nothing outside the root --------------------------------------------------------------------

TRAVERSALS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/./../secret.txt",
    "/..\\secret.txt",
    "/..%5csecret.txt",
    "/sub\\..\\..\\secret.txt",
    "/a.txt%00/../../secret.txt",
    "/%00../secret.txt",
    "/link-out",
    "/rel-link-out",
    "/dirlink-out/secret.txt",
    "/dirlink-out/",
    "/.hidden",
    "/%2ehidden",
    "/%c0%ae%c0%ae/secret.txt",
    "/%252e%252e/secret.txt",
    "/..;/secret.txt",
    "http://127.0.0.1/../secret.txt",
    "secret.txt",
    "/fifo",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_refused(web: ProxyProcess, site: Path, target: str) -> None:
    status, _, body = fetch(web.port, target)
    assert status in (400, 403, 404), (target, status)
    assert SECRET not in body


def test_absolute_filesystem_path_is_looked_up_under_the_root(
    web: ProxyProcess, site: Path
) -> None:
    status, _, body = fetch(web.port, str(site / "secret.txt"))
    assert status == 404
    assert SECRET not in body


def test_symlink_inside_the_root_is_served(conn: HttpConn) -> None:
    assert conn.get("/link-in")[::2] == (200, A_TXT)


# -- files, types, directories -------------------------------------------------------------------


def test_index_html_for_the_root(conn: HttpConn) -> None:
    status, headers, body = conn.get("/")
    assert (status, body) == (200, INDEX)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-length"] == str(len(INDEX))


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        ("/a.txt", "text/plain; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/sub/b.bin", "application/octet-stream"),
    ],
)
def test_content_type_and_length(conn: HttpConn, target: str, content_type: str) -> None:
    status, headers, body = conn.get(target)
    assert status == 200
    assert headers["content-type"] == content_type
    assert int(headers["content-length"]) == len(body) > 0


def test_directory_without_slash_redirects(conn: HttpConn) -> None:
    status, headers, _ = conn.get("/sub?x=1")
    assert (status, headers["location"]) == (301, "/sub/?x=1")
    assert conn.get("/sub/")[::2] == (200, b"sub index\n")


def test_directory_listing_is_on_by_default_as_in_websockify(conn: HttpConn) -> None:
    status, headers, body = conn.get("/noindex/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b'href="c.txt"' in body


def test_file_only_switches_the_listing_off(run_proxy, site: Path, echo_server) -> None:  # type: ignore[no-untyped-def]
    proc = run_proxy(
        ["127.0.0.1:0", echo_server.address, "--web", str(site / "root"), "--file-only"]
    )
    status, _, body = fetch(proc.port, "/noindex/")
    assert status == 403
    assert b"c.txt" not in body


def test_missing_file_is_404(conn: HttpConn) -> None:
    assert conn.get("/nope.txt")[0] == 404


def test_other_methods_are_405_with_allow(conn: HttpConn) -> None:
    status, headers, _ = conn.get("/a.txt", method="DELETE")
    assert (status, headers["allow"]) == (405, "GET, HEAD")


def test_malformed_request_is_400(web: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        sock.sendall(b"GET /a.txt\r\n\r\n")
        status, _, _ = read_http_head(sock)
    assert status == 400


def test_every_request_is_logged_once(web: ProxyProcess, conn: HttpConn) -> None:
    line = r"web peer=127\.0\.0\.1:\d+ method=GET path=/a\.txt\?logged={} status=200 bytes=37"
    conn.get("/a.txt?logged=1")
    web.wait_log(line.format(1))
    conn.get("/a.txt?logged=2")  # a later request: once its line is in, a second one for the
    web.wait_log(line.format(2))  # first request would be in too
    assert len([x for x in web.lines if re.search(line.format(1), x)]) == 1
    assert len([x for x in web.lines if "logged=" in x]) == 2


# -- Range, conditional GET, HEAD, keep-alive ----------------------------------------------------


def test_range_gives_206_with_content_range(conn: HttpConn) -> None:
    status, headers, body = conn.get("/a.txt", "Range: bytes=10-15")
    assert (status, body) == (206, A_TXT[10:16])
    assert headers["content-range"] == f"bytes 10-15/{len(A_TXT)}"
    assert headers["content-length"] == "6"
    status, headers, body = conn.get("/a.txt", "Range: bytes=-5")
    assert (status, body) == (206, A_TXT[-5:])


def test_unsatisfiable_range_is_416(conn: HttpConn) -> None:
    status, headers, _ = conn.get("/a.txt", "Range: bytes=1000-")
    assert status == 416
    assert headers["content-range"] == f"bytes */{len(A_TXT)}"


def test_range_with_a_non_ascii_digit_is_ignored(conn: HttpConn) -> None:
    # latin-1 "²" passes str.isdigit() but not int(): the header is malformed, the file is sent.
    status, _, body = conn.get("/a.txt", "Range: bytes=\xb2-")
    assert (status, body) == (200, A_TXT)


def test_range_ignored_when_if_range_does_not_match(conn: HttpConn) -> None:
    status, _, body = conn.get(
        "/a.txt", "Range: bytes=0-1", "If-Range: Mon, 01 Jan 2001 00:00:00 GMT"
    )
    assert (status, body) == (200, A_TXT)


def test_if_modified_since_gives_304(conn: HttpConn) -> None:
    status, headers, _ = conn.get("/a.txt")
    last_modified = headers["last-modified"]
    status, headers, body = conn.get("/a.txt", f"If-Modified-Since: {last_modified}")
    assert (status, body) == (304, b"")
    status, _, body = conn.get("/a.txt", "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT")
    assert (status, body) == (200, A_TXT)


@pytest.mark.parametrize(
    "since",
    [
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        "Mon, 01 Jan 2001 00:00:00 +99999999999999999999",
        "Mon, 01 Jan 9999 23:59:59 -2359",
        "Mon, 99 Jan 2001 99:99:99 GMT",
    ],
)
def test_an_absurd_if_modified_since_is_ignored(web: ProxyProcess, since: str) -> None:
    # Once an OverflowError and a traceback, with no answer at all.
    status, _, body = fetch(web.port, "/a.txt", f"If-Modified-Since: {since}")
    assert (status, body) == (200, A_TXT)
    assert "Traceback" not in web.log


def test_directory_redirect_names_the_normalised_path(conn: HttpConn) -> None:
    # "//sub/" would be a scheme-relative URL: a browser follows it to http://sub/.
    for target, location in [("//sub", "/sub/"), ("//sub?x=1", "/sub/?x=1"), ("/%73ub", "/sub/")]:
        status, headers, _ = conn.get(target)
        assert (status, headers["location"]) == (301, location), target


def test_a_raw_utf8_path_is_decoded_once(web: ProxyProcess, site: Path) -> None:
    (site / "root" / "\u00fc.txt").write_bytes(b"umlaut\n")
    for target in ("/\u00fc.txt".encode(), b"/%C3%BC.txt"):
        with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), (target, answer[:40])
        assert answer.endswith(b"\r\n\r\numlaut\n")


def test_head_sends_headers_without_body(conn: HttpConn) -> None:
    status, headers, _ = conn.get("/a.txt", method="HEAD")
    assert status == 200
    assert headers["content-length"] == str(len(A_TXT))
    # On the same connection, the next response starts right away: no body was sent.
    assert conn.get("/style.css")[::2] == (200, b"body{}\n")


def test_keep_alive_serves_many_requests_on_one_connection(conn: HttpConn) -> None:
    for _ in range(5):
        status, headers, body = conn.get("/a.txt")
        assert (status, body, headers["connection"]) == (200, A_TXT, "keep-alive")


def test_pipelined_requests_are_answered_in_order(conn: HttpConn) -> None:
    conn.request("/a.txt")
    conn.request("/style.css")
    conn.request("/sub/")
    assert [conn.response()[2] for _ in range(3)] == [A_TXT, b"body{}\n", b"sub index\n"]


def test_connection_close_is_honoured(conn: HttpConn) -> None:
    status, headers, body = conn.get("/a.txt", "Connection: close")
    assert (status, body, headers["connection"]) == (200, A_TXT, "close")
    assert conn.closed_by_server()


def test_http_1_0_closes_unless_keep_alive_asked(web: ProxyProcess) -> None:
    c = HttpConn(web.port)
    try:
        c.request("/a.txt", version="1.0")
        assert c.response()[2] == A_TXT
        assert c.closed_by_server()
    finally:
        c.close()


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the server's FIN; a reset fails the test (it may have eaten data)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_last_answer_survives_a_body_left_unread(web: ProxyProcess) -> None:
    # A GET with a body ends the connection (bodies are not read). Closing with the body still
    # unread would reset the connection, and a reset can destroy the answer on its way.
    body = b"x" * 200_000
    head = b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        sock.sendall(head + body)
        status, headers, rest = read_http_head(sock)
        assert (status, headers["connection"]) == (200, "close")
        assert rest + read_to_end(sock) == A_TXT


def test_last_kept_alive_answer_survives_pipelined_requests(web: ProxyProcess) -> None:
    # 110 pipelined requests: the 100th answer says "close"; the ten after it stay unread.
    pad = "X-Pad: " + "p" * 1000
    request = f"GET /a.txt HTTP/1.1\r\nHost: x\r\n{pad}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        sock.sendall(request * 110)
        answers = read_to_end(sock)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 100
    assert answers.endswith(b"Connection: close\r\nContent-Length: 37\r\n\r\n" + A_TXT)


def test_error_answer_closes_the_connection(conn: HttpConn) -> None:
    status, headers, _ = conn.get("/nope")
    assert (status, headers["connection"]) == (404, "close")
    assert conn.closed_by_server()


def test_websocket_upgrade_still_works_with_web(web: ProxyProcess) -> None:
    from websockets.sync.client import connect

    with connect(web.url, subprotocols=["binary"]) as ws:
        ws.send(b"through the web port")
        assert ws.recv() == b"through the web port"


def test_upgrade_after_a_kept_alive_request_is_relayed(conn: HttpConn) -> None:
    assert conn.get("/a.txt")[0] == 200
    status, headers, _ = conn.get(
        "/",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    )
    assert status == 101
    assert headers["upgrade"].lower() == "websocket"


def test_without_web_a_plain_request_says_websocket_endpoint(proxy: ProxyProcess) -> None:
    status, _, body = fetch(proxy.port, "/index.html")
    assert status == 404
    assert b"WebSocket endpoint" in body


def test_web_that_is_not_a_directory_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = run_cli("127.0.0.1:0", "127.0.0.1:1", "--web", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr and "web" in result.stderr


# -- a big file with flat memory -----------------------------------------------------------------

BIG = 100 * 1024 * 1024


def memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def test_100_mib_file_is_streamed_with_flat_memory(run_proxy, tmp_path: Path, echo_server) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "big"
    root.mkdir()
    with open(root / "big.bin", "wb") as f:  # sparse: 100 MiB of zeros and a marker at the end
        f.truncate(BIG)
        f.seek(BIG - 4)
        f.write(b"END!")
    proc = run_proxy(["127.0.0.1:0", echo_server.address, "--web", str(root)])
    fetch(proc.port, "/nope")  # warm up the code paths once
    before = memory_kib(proc.proc.pid)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, rest = read_http_head(sock)
        assert (status, int(headers["content-length"])) == (200, BIG)
        buf = bytearray(1 << 20)
        zeros = bytes(len(buf))
        received, tail = len(rest), rest[-4:]
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            if received + n <= BIG - 4:
                assert buf[:n] == zeros[:n]
            tail = (tail + bytes(buf[:n]))[-4:]
            received += n
    assert (received, tail) == (BIG, b"END!")
    after = memory_kib(proc.proc.pid)
    # The peak resident size may not grow by more than a few buffers, whatever the file size.
    assert after["VmHWM"] - before["VmRSS"] < 16 * 1024, (before, after)
    assert time.monotonic() - started < 30
