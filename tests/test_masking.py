"""Masking: the C speed-up and the pure-Python fallback give the RFC 6455 section 5.3 result."""

from __future__ import annotations

import os

import pytest

from wsproxy import rfc6455

# Around the fallback's switch to translate passes, the C word loop's tail, and odd lanes.
SIZES = [0, 1, 3, 4, 7, 8, 9, 31, 1023, 1024, 1025, 4097, 65536, 65539]


def reference(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("size", SIZES)
def test_pure_python_masking_matches_the_rfc(size: int) -> None:
    data, mask = os.urandom(size), os.urandom(4)
    expected = reference(data, mask)
    assert rfc6455.py_apply_mask(data, mask) == expected
    assert rfc6455.py_apply_mask(memoryview(bytearray(data)), mask) == expected


@pytest.mark.parametrize("size", SIZES)
def test_c_speedup_matches_the_rfc(size: int) -> None:
    from wsproxy import _speedups  # built by `pip install -e .` (make venv)

    data, mask = os.urandom(size), os.urandom(4)
    assert _speedups.apply_mask(data, mask) == reference(data, mask)
    assert _speedups.apply_mask(memoryview(data)[1:], mask) == reference(data[1:], mask)


def test_the_c_speedup_is_used_when_built() -> None:
    from wsproxy import _speedups

    assert rfc6455.apply_mask is _speedups.apply_mask


def test_c_speedup_refuses_a_short_mask() -> None:
    from wsproxy import _speedups

    with pytest.raises(ValueError):
        _speedups.apply_mask(b"data", b"abc")
