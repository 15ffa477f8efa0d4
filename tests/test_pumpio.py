"""A pump's reads (wsproxy/pumpio.py Reader): the socket's read watcher stays started between
reads, yet wakes the pump only while it waits to read, and is free for gevent's own reads once the
pump is done."""

from __future__ import annotations

import errno
import socket

import gevent
import gevent.socket
import pytest
from gevent.exceptions import ConcurrentObjectUseError

from wsproxy.pumpio import Reader


@pytest.fixture
def pair() -> tuple[gevent.socket.socket, socket.socket]:
    """A gevent socket (the pump's) and the plain socket at its other end."""
    a, b = socket.socketpair()
    ours = gevent.socket.socket(fileno=a.detach())
    yield ours, b
    ours.close()
    b.close()


def _watching(sock: gevent.socket.socket) -> bool:
    return sock._read_event.callback is not None


def test_a_waiting_pump_reads_what_arrives_and_keeps_watching(pair) -> None:
    ours, peer = pair
    buf = bytearray(64)
    reader = Reader(ours)
    pump = gevent.spawn(lambda: [reader.recv(buf, True) for _ in range(2)])
    gevent.sleep(0.01)
    assert not pump.ready()  # nothing sent yet: it waits
    peer.sendall(b"one")
    gevent.sleep(0.01)
    assert _watching(ours)  # between the two reads the watcher was left started
    peer.sendall(b"two")
    assert pump.get(timeout=5) == [3, 3]
    assert bytes(buf[:3]) == b"two"


def test_readable_while_the_pump_is_elsewhere_does_not_switch_into_it(pair) -> None:
    """The watcher fires while the pump sleeps (as while it writes or waits for the lock): the
    pump's sleep must end as a sleep, not as a wrong switch from the watcher."""
    ours, peer = pair
    buf = bytearray(64)

    def pump() -> tuple[int, int]:
        reader = Reader(ours)
        first = reader.recv(buf, True)
        gevent.sleep(0.1)  # busy elsewhere; the next bytes arrive meanwhile
        return first, reader.recv(buf, False)

    glet = gevent.spawn(pump)
    gevent.sleep(0.01)
    peer.sendall(b"a")
    gevent.sleep(0.02)
    peer.sendall(b"bc")
    assert glet.get(timeout=5) == (1, 2)


def test_a_stopped_reader_leaves_the_socket_to_gevents_own_reads(pair) -> None:
    ours, peer = pair
    buf = bytearray(64)
    reader = Reader(ours)
    peer.sendall(b"x")
    assert reader.recv(buf, True) == 1
    assert _watching(ours)
    reader.stop()
    assert not _watching(ours)
    peer.sendall(b"after")
    assert ours.recv(64) == b"after"  # gevent's recv would refuse a watcher in use


def test_a_pump_killed_while_waiting_frees_the_watcher_with_stop(pair) -> None:
    ours, _ = pair
    reader_box: list[Reader] = []

    def pump() -> None:
        reader = Reader(ours)
        reader_box.append(reader)
        try:
            reader.recv(bytearray(8), True)
        finally:
            reader.stop()

    glet = gevent.spawn(pump)
    gevent.sleep(0.01)
    assert _watching(ours)
    glet.kill(timeout=5)
    assert glet.dead and not _watching(ours)


def test_closing_the_socket_in_another_greenlet_raises_in_the_waiting_pump(pair) -> None:
    ours, _ = pair
    glet = gevent.spawn(Reader(ours).recv, bytearray(8), True)
    gevent.sleep(0.01)
    ours.close()
    with pytest.raises(OSError) as raised:
        glet.get(timeout=5)
    assert raised.value.errno == errno.EBADF


def test_a_socket_with_a_timeout_times_out_as_gevents_read_does(pair) -> None:
    ours, _ = pair
    ours.settimeout(0.05)
    with pytest.raises(socket.timeout):
        gevent.spawn(Reader(ours).recv, bytearray(8), True).get(timeout=5)
    assert not _watching(ours)


def test_a_second_reader_of_a_watched_socket_is_refused(pair) -> None:
    """As gevent refuses a second greenlet waiting on one socket: the first reader's watcher
    would wake only the first."""
    ours, peer = pair
    first = Reader(ours)
    peer.sendall(b"x")
    first.recv(bytearray(8), True)
    with pytest.raises(ConcurrentObjectUseError):
        Reader(ours).recv(bytearray(8), True)
