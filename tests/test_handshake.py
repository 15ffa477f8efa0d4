"""Unit tests of request parsing, classification and the RFC 6455 answer (no sockets)."""

from __future__ import annotations

import pytest

from wsproxy.errors import HandshakeError
from wsproxy.protocol.handshake import (
    MAX_HEAD_BYTES,
    Kind,
    accept_rfc6455,
    check_origin,
    classify,
    error_response,
    parse_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(*extra: str, version: str | None = "13", key: str | None = KEY) -> bytes:
    lines = [
        "GET /chat HTTP/1.1",
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse(data: bytes):  # type: ignore[no-untyped-def]
    result = parse_request(data)
    assert result is not None
    return result[0]


def status_of(data: bytes) -> int:
    with pytest.raises(HandshakeError) as exc_info:
        accept_rfc6455(parse(data))
    return exc_info.value.status.value


def test_rfc_example_is_accepted_with_its_accept_key() -> None:
    response, subprotocol = accept_rfc6455(parse(upgrade()))
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert subprotocol is None
    assert b"Sec-WebSocket-Protocol" not in response


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [("binary", "binary"), ("base64", "base64"), ("base64, binary", "binary"), ("chat", None)],
)
def test_subprotocol_choice_prefers_binary(offered: str, chosen: str | None) -> None:
    _, subprotocol = accept_rfc6455(parse(upgrade(f"Sec-WebSocket-Protocol: {offered}")))
    assert subprotocol == chosen


@pytest.mark.parametrize("version", ["13", "8", "7"])
def test_supported_versions(version: str) -> None:
    accept_rfc6455(parse(upgrade(version=version)))


def test_incomplete_head_needs_more_data() -> None:
    data = upgrade()
    for cut in range(len(data) - 1):
        assert parse_request(data[:cut]) is None


def test_bytes_after_the_head_are_left_for_the_caller() -> None:
    data = upgrade() + b"\x81\x80rest"
    request, used = parse_request(data)
    assert data[used:] == b"\x81\x80rest"
    assert request.header("HOST") == "server.example.com"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (upgrade(version="12"), 426),
        (upgrade(version=None), 426),
        (upgrade(key="short"), 400),
        (upgrade(key="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 400),  # 27 bytes
        (upgrade(key="!!!!!!!!!!!!!!!!!!!!!!=="), 400),
        (upgrade(key=None), 400),
        (upgrade().replace(b"GET", b"POST"), 405),
        (upgrade().replace(b"HTTP/1.1", b"HTTP/1.0"), 400),
        (upgrade().replace(b"Connection: keep-alive, Upgrade", b"Connection: close"), 400),
        (upgrade().replace(b"Host: server.example.com\r\n", b""), 400),
    ],
)
def test_bad_upgrades_get_their_status(data: bytes, status: int) -> None:
    assert status_of(data) == status


def test_426_names_the_supported_version() -> None:
    with pytest.raises(HandshakeError) as exc_info:
        accept_rfc6455(parse(upgrade(version="99")))
    response = error_response(exc_info.value)
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13" in response
    assert response.endswith(b"unsupported Sec-WebSocket-Version '99'\n")


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / SPDY/3\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX\nY: 1\r\n\r\n",
        # Control characters, DEL or stray spaces in the request line (header injection, 15).
        b"GET /a\nSet-Cookie:x HTTP/1.1\r\n\r\n",
        b"GET /a\rb HTTP/1.1\r\n\r\n",
        b"GET /a\tb HTTP/1.1\r\n\r\n",
        b"GET /a\x00 HTTP/1.1\r\n\r\n",
        b"GET /a\x7f HTTP/1.1\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\n\r\n",
        b"G\xc9T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\x0b\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        # Incomplete heads that can never become valid: refused at once, not at the timeout.
        b"\x00",
        b"{",
        b"GE(T",
        b"GET /" + b"a" * 9000,
        b"GET / HTTP/1.1\n",
        b"GET / FTP/1.0\r\n",
        b"GET / HTTP/1.1 x\r\nHost: a\r\n",
    ],
)
def test_malformed_heads_are_400(data: bytes) -> None:
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 400


@pytest.mark.parametrize(
    "data", [b"", b"G", b"GET", b"GET /", b"GET / HTTP/1.1\r", b"GET / HTTP/1.1\r\nX"]
)
def test_a_valid_prefix_needs_more_data(data: bytes) -> None:
    assert parse_request(data) is None


def test_oversized_head_is_431_before_it_is_complete() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * MAX_HEAD_BYTES
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 431


def test_too_many_headers_is_431() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n"
    with pytest.raises(HandshakeError) as exc_info:
        parse_request(data)
    assert exc_info.value.status == 431


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (upgrade(), Kind.RFC6455),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", Kind.HTTP),
        (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key1: 1 1\r\n\r\n", Kind.HIXIE76),
        (b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n", Kind.HIXIE75),
        (b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", Kind.HTTP),
    ],
)
def test_classify(data: bytes, kind: Kind) -> None:
    assert classify(parse(data)) is kind


def test_origin_check() -> None:
    request = parse(upgrade("Origin: https://good.example"))
    check_origin(request, ())
    check_origin(request, ("https://good.example",))
    with pytest.raises(HandshakeError) as exc_info:
        check_origin(request, ("https://other.example",))
    assert exc_info.value.status == 403


def test_error_response_is_complete_http() -> None:
    from http import HTTPStatus

    response = error_response(HandshakeError(HTTPStatus.BAD_GATEWAY, "cannot connect"))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 502 Bad Gateway"
    assert b"Content-Length: 15" in head and b"Connection: close" in head
    assert body == b"cannot connect\n"
