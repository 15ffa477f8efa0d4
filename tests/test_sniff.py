"""wsproxy.protocol.sniff: the first bytes decide TLS, Flash policy or HTTP; a prefix waits."""

from __future__ import annotations

import pytest

from wsproxy.protocol.sniff import POLICY_REQUEST, Kind, classify


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", Kind.INCOMPLETE),
        (b"\x16", Kind.TLS),
        (b"\x16\x03\x01\x02\x00\x01", Kind.TLS),
        (b"\x80\x2e\x01\x00\x02", Kind.TLS),  # SSLv2-style ClientHello
        (b"GET / HTTP/1.1\r\n", Kind.HTTP),
        (b"G", Kind.HTTP),
        (b"POST /x HTTP/1.1\r\n", Kind.HTTP),
        (b"\x00garbage", Kind.HTTP),  # the HTTP parser refuses it with 400
        (POLICY_REQUEST, Kind.POLICY),
        (POLICY_REQUEST + b"trailing", Kind.POLICY),
        (b"<policy-file-request/>", Kind.INCOMPLETE),  # the NUL is still to come
        (b"<policy-file-request/>X", Kind.HTTP),
        (b"<policy-file-requesx", Kind.HTTP),
        (b"<", Kind.INCOMPLETE),
    ],
)
def test_classify(data: bytes, kind: Kind) -> None:
    assert classify(data) is kind
    assert classify(bytearray(data)) is kind


def test_policy_request_fed_one_byte_at_a_time_is_incomplete_until_the_nul() -> None:
    for size in range(len(POLICY_REQUEST)):
        assert classify(POLICY_REQUEST[:size]) is Kind.INCOMPLETE
    assert classify(POLICY_REQUEST) is Kind.POLICY
