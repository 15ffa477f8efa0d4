"""The two pumps that move bytes between a WebSocket client and its TCP target.

client -> target: read into a reused buffer, decode with the codec, write to the target.
target -> client: read into a reused buffer, frame with the codec, write to the client.

There is no queue between them: a write that blocks stops its pump from reading, so a slow reader
slows its writer (backpressure). Whichever pump ends first decides who closed and why;
:meth:`Relay.run` then ends the other and returns.

Memory: an idle session holds no read buffer and no greenlet besides its own: the client pump
runs in the session's greenlet, and the target pump, while it has nothing to wait for, runs on
the hub (see "The target pump on the hub" below). Every pump of a server reads into one shared
``scratch`` buffer (:func:`scratch_buffer`): a gevent read fills the buffer only when it
returns, and what the pump needs from it is sent or copied before the pump can yield again, so
no other greenlet (nor the hub) can see the buffer change under it. 10,000 idle sessions would
otherwise hold 1.25 GiB of buffers.

Download at the copy limit: the target is read into the scratch behind ``HEADER_ROOM`` free
bytes, the frame header is written in front of the payload, and header and payload go to the
client as one buffer straight from the scratch (only a part the socket cannot take at once is
copied out). A read that filled at least ``DRAIN_FROM`` bytes may have more behind it: the pump
reads on without waiting before it frames, so a target writing in small pieces does not cost a
frame and a syscall per piece, while a lone small write goes out at once.

Waking up: after a small read (under ``DRAIN_FROM``: a keystroke, an echo, a mouse event) the
socket is almost always empty, so the pump waits for it to become readable before it reads
again instead of trying first and failing with EAGAIN as gevent's ``recv_into`` does: a failed
system call and its exception less on every wake-up of each pump. After a larger read (a stream)
more is likely there already, and the pump reads at once. Each pump waits with a
:class:`wsproxy.pumpio.Reader`, which leaves the socket's read watcher started between reads
instead of starting and stopping it (and a new ``Waiter``) on every wake-up as gevent's wait does.

The target pump on the hub: when both sockets are plain (no TLS) and nothing records the
session, the target's read watcher calls :meth:`Relay._target_readable` on the hub. It reads,
frames and writes what it read without waiting, which is the whole of a small download (an echo,
a screen update that fits the client's socket buffer): no greenlet to spawn for the session, to
switch to on each read, or to kill at its end. Whatever would have to wait (a frame the client's
socket cannot take at once, the send lock held by another writer, the target's end, an error)
is handed to a greenlet that runs the target pump from there on, as it does for TLS sockets.

A permessage-deflate codec returns at most 256 KiB of inflated payload per decode and says there
is more (``Decoded.more``): the client pump writes that, yields, and asks again before it reads,
so a small compressed read never becomes a large buffer.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.socket
from gevent.lock import Semaphore

from wsproxy.errors import CloseCode, ProtocolError
from wsproxy.protocol.codec import Codec
from wsproxy.pumpio import Reader, drain, fast_reads, plain, send_all, send_first
from wsproxy.wire import linger_close

__all__ = ["RECV_SIZE", "Outcome", "Relay", "scratch_buffer"]

RECV_SIZE = 256 * 1024  # bytes per read, each direction (as socat -b 262144)
HEADER_ROOM = 10  # the longest header of an unmasked frame: 2 bytes and a 64-bit length
DRAIN_FROM = 1024  # a read at least this long may have more waiting behind it ...


def scratch_buffer(size: int = RECV_SIZE) -> bytearray:
    """A read buffer that all relays running in one gevent hub (one server) may share."""
    return bytearray(HEADER_ROOM + size)


@dataclass
class Outcome:
    """How a relay ended: ``by`` is client, target, proxy (protocol error) or server (shutdown)."""

    by: str
    code: int
    reason: str


class Relay:
    """Relays one client and one target until either ends.

    Args:
        client, target: connected sockets (gevent or plain-with-patching).
        codec: the protocol of the client.
        close_timeout: how long the client has to answer our close frame.
        recorder: optional object with ``from_client(bytes)`` and ``to_client(bytes)``.
        scratch: the read buffer shared by the relays of one hub (see the module's notes);
            without it the relay allocates one ``recv_size`` buffer for its pumps, as safe to
            share as the hub's.
    """

    def __init__(
        self,
        client: Any,
        target: Any,
        codec: Codec,
        *,
        close_timeout: float = 2.0,
        recorder: Any = None,
        recv_size: int = RECV_SIZE,
        scratch: bytearray | None = None,
    ) -> None:
        self.client = client
        self.target = target
        self.codec = codec
        self.close_timeout = close_timeout
        self.recorder = recorder
        self.recv_size = recv_size
        self.scratch = scratch
        self.bytes_in = 0  # payload bytes client -> target
        self.bytes_out = 0  # payload bytes target -> client
        self.outcome: Outcome | None = None
        self._send_lock = Semaphore()
        # Control frames (the heartbeat's ping) waiting for the writer holding the lock, with
        # the event each sender waits on; None while there are none (the usual case).
        self._controls: list[tuple[bytes, gevent.event.Event]] | None = None
        self._closing = False  # no data frame may be written any more (our close is due)
        self._close_started = False  # an _end() is writing our close frame ...
        self._close_done = gevent.event.Event()  # ... and has finished trying
        self.close_sent = False  # ... and succeeded
        self._deadline = 0.0  # the whole closing phase ends by then (set by the first _end)
        self.last_counts = (0, 0, 0.0)  # (bytes_in, bytes_out, when) for the idle sweeper
        self.client_reads = 0  # reads that brought client bytes (the heartbeat's "answered")
        self._up: Any = None  # the greenlet that runs the client pump (run()'s caller)
        self._up_done = False  # ... and that pump has returned
        self._down: Any = None  # the greenlet that runs the target pump, once it needs one
        self._watching = False  # the target pump runs on the hub (see the module's notes)
        self._down_done = False  # the target pump has ended
        self._expiry: Any = None  # the timer that ends the client pump after the target's end
        # A frame can be written from the scratch without waiting (TLS sockets always may wait).
        self._nowait_send = plain(client)

    def run(self, pending: bytes = b"") -> Outcome:
        """Pump both ways until one side ends; ``pending`` are client bytes read with the head.

        The client pump runs in the caller's greenlet, the target pump on the hub or in a
        greenlet of its own (see the module's notes). The closing phase (our close frame, the
        client's answer, a lingering close after a protocol error) takes at most
        ``close_timeout`` in all, and a pump is never stopped while it writes a frame to the
        client.
        """
        self._up = gevent.getcurrent()
        if self.recorder is None and self._nowait_send and fast_reads(self.target):
            self._watching = True
            self.target._read_event.start(self._target_readable)
        else:
            self._down = gevent.spawn(self._run_down)
        try:
            try:
                self._pump_client(pending)
            except _Expired:
                pass  # the target side ended and the client did not answer our close in time
            finally:
                self._up_done = True
                if self._expiry is not None:
                    self._expiry.close()
            if not self._down_done:
                # The client closed, broke the protocol or went away: stop the data pump
                # between two frames, never inside one.
                self._closing = True
                with gevent.Timeout(self._left(), False), self._send_lock:
                    self._stop_down()
            if self._close_started:
                self._close_done.wait(timeout=self._left())  # e.g. going_away() still writing
        finally:
            self._stop_down()
            _close(self.target)
            self._drop_controls()
        assert self.outcome is not None
        if self.outcome.by == "proxy" and self.close_sent:
            # We stopped reading at the violation, the client may still be sending: closing with
            # unread input would reset the connection and could destroy our close frame.
            linger_close(self.client, b"", self._left())
        return self.outcome

    def _stop_down(self) -> None:
        self._unwatch()
        if self._down is not None:
            self._down.kill()

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            watcher = self.target._read_event
            if watcher is not None:
                watcher.stop()

    def _run_down(self, carry: bytes = b"", count: int = 0, held: bool = False) -> None:
        """The target pump in a greenlet (``carry``: see :meth:`_pump_target`)."""
        try:
            self._pump_target(carry, count, held)
        finally:
            self._down_over()

    def _down_over(self) -> None:
        """The target pump ended: the client's answer (which ends the client pump) is awaited
        until the closing phase is over, then the client pump is stopped."""
        self._down_done = True
        if not self._up_done:
            # A timer, not a watching greenlet: the client pump cancels it when it returns,
            # so it can only ever fire inside the pump.
            self._expiry = gevent.get_hub().loop.timer(self._left())
            self._expiry.start(self._up.throw, _Expired())

    def going_away(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down"
    ) -> None:
        """Close from our side (shutdown, idle): cut the target, then send ``code`` to the
        client once the frame being written, if any, is complete."""
        with contextlib.suppress(OSError):
            self.target.shutdown(socket.SHUT_RDWR)
        self._end("server", code, reason)

    def send_control(self, frame: bytes) -> None:
        """Write a control frame (the heartbeat's ping) between two data frames; nothing once
        our close is due. Returns when it is out, or will never be. A failed write is the
        pumps' to report.

        While a pump writes, the frame is queued for it: the pump writes it right after its
        current frame, before it can take the lock again (behind a target that always has more
        to send, waiting for the lock would starve the ping)."""
        if self._closing:
            return
        if self._send_lock.locked():
            done = gevent.event.Event()
            if self._controls is None:
                self._controls = []
            self._controls.append((frame, done))
            done.wait()
            return
        with contextlib.suppress(_Closing, OSError):
            self._send_client(frame)

    # -- the pumps --

    def _pump_client(self, pending: bytes) -> None:
        codec = self.codec
        send = self.target.send
        # The non-blocking socket below gevent's takes a frame at once (one Python frame less).
        raw_send = self.target._sock.send if plain(self.target) else None
        recorder = self.recorder
        buf = self._buffer()
        view = memoryview(buf)
        client = self.client
        reader = Reader(client)
        n = DRAIN_FROM  # nothing read yet: read before waiting
        data: memoryview = memoryview(pending)
        more = False  # the codec has output left from the last input (deflate's bounded pieces)
        try:
            while True:
                if data or more:
                    decoded = codec.decode(data)
                    payloads = decoded.to_target
                    if self._closing:
                        pass  # our close is due: only the client's answer matters now
                    elif payloads:
                        # One write for all the frames of this read (64 per read at 1 KiB).
                        out = payloads[0] if len(payloads) == 1 else b"".join(payloads)
                        try:
                            if raw_send is None:
                                send_all(send, out)
                            else:
                                send_first(raw_send, send, out)
                        except OSError as exc:
                            # Close with 1011, and go on reading for the client's answer.
                            self._end_on_error("target", exc)
                        else:
                            self.bytes_in += len(out)
                            if recorder is not None:
                                for payload in payloads:
                                    recorder.from_client(payload)
                    for frame in decoded.to_client:
                        if self._closing:
                            break
                        with contextlib.suppress(_Closing):
                            self._send_client(frame)
                    if decoded.error is not None:  # after the valid frames before it
                        raise decoded.error
                    if decoded.close is not None:
                        code, reason = decoded.close
                        self._end("client", code, reason)  # echoed, unless it answers ours
                        return
                    more = decoded.more
                    if more:  # a long inflated message: let the other sessions run between pieces
                        gevent.sleep(0)
                        data = _NOTHING
                        continue
                n = reader.recv(buf, n < DRAIN_FROM)
                if not n:
                    codec.eof()  # a text message cut inside a character is still a 1007
                    self._end("client", CloseCode.ABNORMAL, "connection dropped", send=False)
                    return
                self.client_reads += 1
                data = view[:n]
        except ProtocolError as exc:
            self._end("proxy", exc.close_code, exc.reason)
        except OSError as exc:
            self._end_on_error("client", exc)
        finally:
            reader.stop()

    def _target_readable(self) -> None:
        """The target pump on the hub, called by the target's read watcher: one read (and what
        waits behind it), framed and written without waiting, else handed to a greenlet."""
        buf = self._buffer()
        view = memoryview(buf)
        payload = view[HEADER_ROOM:]
        raw_recv = self.target._sock.recv_into
        try:
            n = raw_recv(payload)
            if n >= DRAIN_FROM:
                n = drain(raw_recv, payload, n)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end_down(self._end_on_error, "target", exc)
            return
        if not n:
            self._end_down(self._end, "target", CloseCode.NORMAL, "target closed")
            return
        if self._closing:  # our close is due: the target's data is dropped, its pump ends
            self._unwatch()
            self._down_over()
            return
        frame = _framed(self.codec, buf, view, n)
        lock = self._send_lock
        if lock.locked():  # another writer's frame is going out: ours waits in a greenlet
            self._hand_down(bytes(frame), n)
            return
        try:
            sent = self.client._sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._end_down(self._end_on_error, "client", exc)
            return
        if sent == len(frame):
            self.bytes_out += n
            return
        # The client's socket is full: the rest of the frame goes out from a greenlet, and no
        # other writer may come between (the lock, free until now, is taken for it here).
        lock.acquire(blocking=False)
        self._hand_down(bytes(frame[sent:]), n, True)

    def _hand_down(self, carry: bytes, count: int, held: bool = False) -> None:
        """A frame must wait: the target pump goes on in a greenlet, from that frame."""
        self._unwatch()
        self._down = gevent.spawn(self._run_down, carry, count, held)

    def _end_down(self, end: Any, *args: Any) -> None:
        """The target pump on the hub ends with ``end(*args)``, which may wait: in a greenlet."""
        self._unwatch()
        self._down = gevent.spawn(self._ending, end, *args)

    def _ending(self, end: Any, *args: Any) -> None:
        try:
            end(*args)
        finally:
            self._down_over()

    def throw(self, error: Any) -> None:
        """gevent's close or shutdown of the target in another greenlet while the target pump
        runs on the hub: gevent throws ``error`` (an exception or its class) into the owner of
        the watcher's callback. The pump ends with it, as a waiting pump's read would."""
        if self._watching:
            exc = error() if isinstance(error, type) else error
            self._end_down(self._end_on_error, "target", exc)

    def _pump_target(self, carry: bytes = b"", count: int = 0, held: bool = False) -> None:
        """The target pump in a greenlet. ``carry`` is a frame (or, if ``held``, the rest of one
        with the send lock taken for it) that the pump on the hub could not write, for
        ``count`` payload bytes."""
        codec = self.codec
        recorder = self.recorder
        buf = self._buffer()
        view = memoryview(buf)
        payload = view[HEADER_ROOM:]
        target = self.target
        reader = Reader(target)
        fast = reader.fast
        n = DRAIN_FROM  # nothing read yet: read before waiting
        # Reading on without waiting needs the socket below gevent's (plain TCP or UNIX only).
        raw_recv = target._sock.recv_into if fast else None
        failed = "target"
        try:
            if carry:
                failed = "client"
                if held:
                    self._finish_frame(carry)
                else:
                    self._send_client(carry)
                failed = "target"
                self.bytes_out += count
            while True:
                n = reader.recv(payload, n < DRAIN_FROM)
                if not n:
                    break
                if raw_recv is not None and n >= DRAIN_FROM:
                    n = drain(raw_recv, payload, n)
                if recorder is not None:  # before the send: the scratch is ours until we yield
                    recorder.to_client(bytes(payload[:n]))
                failed = "client"
                self._send_client(_framed(codec, buf, view, n))
                failed = "target"
                self.bytes_out += n
        except OSError as exc:
            self._end_on_error(failed, exc)
            return
        except _Closing:
            return
        finally:
            reader.stop()
        self._end("target", CloseCode.NORMAL, "target closed")

    def _buffer(self) -> bytearray:
        if self.scratch is None:
            self.scratch = bytearray(HEADER_ROOM + self.recv_size)
        return self.scratch

    # -- ending --

    def _send_client(self, data: bytes | memoryview) -> None:
        """Both pumps write to the client (data frames, pongs): one writer at a time, and
        nothing after our close frame (RFC 6455 section 5.5.1).

        A memoryview is a frame in the shared scratch: it is written before this greenlet can
        yield, and whatever would have to wait (for the lock, for room in the socket) is copied
        out first."""
        lock = self._send_lock
        if lock.locked() and type(data) is memoryview:
            data = bytes(data)  # waiting for the lock lets other pumps refill the scratch
        with lock:
            if self._closing:
                raise _Closing()
            if type(data) is not memoryview:
                send_all(self.client.send, data)
            elif self._nowait_send:
                send_first(self.client._sock.send, self.client.send, data)
            else:
                send_all(self.client.send, bytes(data))  # TLS: its send may wait
            if self._controls is not None:
                self._write_controls()

    def _finish_frame(self, rest: bytes) -> None:
        """Write the rest of a frame begun on the hub, which took the send lock for it."""
        try:
            send_all(self.client.send, rest)
            if self._controls is not None:
                self._write_controls()
        finally:
            self._send_lock.release()

    def _write_controls(self) -> None:
        """Write the queued control frames (the caller holds the lock) and wake their senders."""
        controls, self._controls = self._controls or [], None
        try:
            for frame, _ in controls:
                send_all(self.client.send, frame)
        finally:
            for _, done in controls:
                done.set()

    def _drop_controls(self) -> None:
        """The relay is ending: no queued control frame will go out; wake their senders."""
        controls, self._controls = self._controls or [], None
        for _, done in controls:
            done.set()

    def _end_on_error(self, side: str, exc: OSError) -> None:
        if side == "target":
            self._end("target", CloseCode.INTERNAL_ERROR, f"target error: {exc.strerror or exc}")
        else:
            self._end("client", CloseCode.ABNORMAL, "connection dropped", send=False)

    def _end(self, by: str, code: int, reason: str, *, send: bool = True) -> None:
        """Record the first reason the relay ends and send our close frame once.

        ``_closing`` is set before waiting for the send lock: a pump writing a data frame
        finishes that frame, and its next write stops the pump instead of taking the lock
        again, so the close goes out next.
        """
        if self.outcome is None:
            self.outcome = Outcome(by, code, reason)
            self._deadline = time.monotonic() + self.close_timeout
        self._drop_controls()  # a ping is moot now, and must not follow our close frame
        if not send or self._close_started:
            return
        self._close_started = self._closing = True
        try:
            with gevent.Timeout(self._left()), self._send_lock:
                send_all(self.client.send, self.codec.close_frame(code, reason))
            self.close_sent = True
        except (OSError, gevent.Timeout):
            pass
        finally:
            self._close_done.set()

    def _left(self) -> float:
        """Time left in the closing phase (all of ``close_timeout`` before it began)."""
        if not self._deadline:
            return self.close_timeout
        return max(self._deadline - time.monotonic(), 0.0)


_NOTHING = memoryview(b"")


def _framed(codec: Codec, buf: bytearray, view: memoryview, n: int) -> bytes | memoryview:
    """The frame for the ``n`` bytes read into ``buf`` behind ``HEADER_ROOM``: a view of
    ``buf`` with the header written in front when the codec allows, else a new buffer."""
    if codec.in_place:
        header = codec.header(n)
        start = HEADER_ROOM - len(header)
        buf[start:HEADER_ROOM] = header
        return view[start : HEADER_ROOM + n]
    return codec.encode(view[HEADER_ROOM : HEADER_ROOM + n])


class _Closing(Exception):
    """A pump tried to write after our close frame: it ends (the outcome is already set)."""


class _Expired(Exception):
    """The closing phase is over and the client pump still waits for the client's answer."""


def _close(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.close()
