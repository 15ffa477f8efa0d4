"""The C speed-ups (wsproxy/_speedups.c) and their pure-Python fallbacks give the same results."""

from __future__ import annotations

import binascii
import os

import pytest

from wsproxy.protocol import payload

# Around the fallback's switch to translate passes, the C word loop's tail, and odd lanes.
SIZES = [0, 1, 3, 4, 7, 8, 9, 31, 1023, 1024, 1025, 4097, 65536, 65539]


def reference(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("size", SIZES)
def test_pure_python_masking_matches_the_rfc(size: int) -> None:
    data, mask = os.urandom(size), os.urandom(4)
    expected = reference(data, mask)
    assert payload.py_apply_mask(data, mask) == expected
    assert payload.py_apply_mask(memoryview(bytearray(data)), mask) == expected


@pytest.mark.parametrize("size", SIZES)
def test_c_speedup_matches_the_rfc(size: int) -> None:
    from wsproxy import _speedups  # built by `pip install -e .` (make venv)

    data, mask = os.urandom(size), os.urandom(4)
    assert _speedups.apply_mask(data, mask) == reference(data, mask)
    assert _speedups.apply_mask(memoryview(data)[1:], mask) == reference(data[1:], mask)


def test_the_c_speedup_is_used_when_built() -> None:
    from wsproxy import _speedups

    assert payload.apply_mask is _speedups.apply_mask


def test_pure_python_masking_refuses_a_short_mask_like_the_c_speedup() -> None:
    with pytest.raises(ValueError):
        payload.py_apply_mask(b"data", b"abc")


def test_c_speedup_refuses_a_short_mask() -> None:
    from wsproxy import _speedups

    with pytest.raises(ValueError):
        _speedups.apply_mask(b"data", b"abc")


# Every length to 100 crosses the vector loops' 12-byte (encode) and 16-character (decode)
# blocks at every offset, and their stops where fewer than 16 bytes can be loaded or stored.
B64_SIZES = [*range(101), 65535, 65536, 65537, 262144]


@pytest.mark.parametrize("size", B64_SIZES)
def test_c_base64_matches_binascii(size: int) -> None:
    from wsproxy import _speedups

    data = os.urandom(size)
    text = binascii.b2a_base64(data, newline=False)
    assert _speedups.b64encode(data) == text
    assert _speedups.b64encode(data, b"\x81\x7e") == payload.py_b64encode(data, b"\x81\x7e")
    assert _speedups.b64decode(text) == data
    assert payload.b64decode(text) == data


# Malformed text: the C path must never accept what binascii (strict) refuses, nor differ.
BAD_BASE64 = [
    b"abc",
    b"ab=c",
    b"a===",
    b"====",
    b"ab!d",
    b"abcd====",
    b"=abc",
    b"ab=cabcd",
    b"abcd\n",
    b"ab==",
    b"abc=",
    b"ab=\xff",
]


def test_c_base64_encodes_every_value_in_every_lane() -> None:
    """The vector encoder maps each 6-bit value through one of five ranges (A-Z, a-z, 0-9, +, /):
    every value at each of the four places of a group, in each of the four groups of a block."""
    from wsproxy import _speedups

    groups = b"".join((v << 18 | v << 12 | v << 6 | v).to_bytes(3, "big") for v in range(64))
    for shift in range(4):  # the same values moved by one group: each lands in another lane
        data = groups[3 * shift :] + groups[: 3 * shift]
        assert _speedups.b64encode(data) == binascii.b2a_base64(data, newline=False)
        assert _speedups.b64decode(_speedups.b64encode(data)) == data


def test_c_base64_decoding_refuses_a_bad_character_anywhere() -> None:
    """One character outside the alphabet, at any place of a long text (inside the vector blocks
    and in the tail), is refused (None: binascii then gives the verdict), never decoded."""
    from wsproxy import _speedups

    text = binascii.b2a_base64(os.urandom(120), newline=False)
    for place in range(len(text)):
        for bad in (0, 42, 44, 46, 58, 64, 91, 96, 123, 127, 128, 255):
            broken = text[:place] + bytes([bad]) + text[place + 1 :]
            assert _speedups.b64decode(broken) is None, (place, bad)


@pytest.mark.parametrize("text", BAD_BASE64)
def test_base64_decoding_gives_binascii_strict_verdict(text: bytes) -> None:
    try:
        expected: bytes | type[Exception] = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        expected = type(exc)
    try:
        got: bytes | type[Exception] = payload.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        got = type(exc)
    assert got == expected


def test_base64_decoder_without_the_c_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payload, "_fast_b64decode", payload.py_b64decode)
    data = os.urandom(1000)
    text = payload.py_b64encode(data)
    decoder = payload.Base64Decoder()
    assert decoder.decode(text[:501], False) + decoder.decode(text[501:], True) == data
    with pytest.raises(payload.ProtocolError):
        payload.Base64Decoder().decode(b"ab!d", True)
