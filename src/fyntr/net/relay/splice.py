"""Bulk tunnels through the kernel: ``splice()`` from socket to pipe to socket (Linux).

Relaying through user space copies every byte twice more than a direct connection,
into fyntr and out again; on a small machine those copies, not fyntr's Python, bound a
bulk transfer (benchmarks/run.py: 0.04-0.2 cores of user time, 0.5 of system time at
half of direct's speed). ``splice()`` moves the pages instead: a two-thread relay on
this project's machine moved 2.3-2.8 GB/s with splice against 1.4-1.9 GB/s with
recv/send, at a third of the system time; in fyntr, the benchmark's download went from
1.8 to 2.2 GB/s while fyntr's CPU fell from 0.61 to 0.38 cores (median of 3).

Only tunnels that need no scheduling are handed over: with no ``--upload-rate`` or
``--download-rate`` the DRR scheduler has no shared budget to divide, and a tunnel's
bytes wait only for its own destination. A tunnel is handed over once one direction
has carried ``SPLICE_AFTER_BYTES``, so the handshakes and small API calls of a burst
(most tunnels) never pay for the switch, and only when nothing is buffered in fyntr and
neither side has sent its FIN. The sockets are taken from the loop's transports (which
own their descriptors) by duplicating them; each direction gets a pipe of
``HIGH_WATERMARK_BYTES``: what sits in the pipe is what fyntr holds for that direction,
so backpressure is the pipe being full, with the same bound as on the transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from fyntr.limits import HIGH_WATERMARK_BYTES, QUANTUM_MAX_BYTES, RATE_TIMER_MIN_S
from fyntr.net.kernel.sockopt import send_rst_on_close
from fyntr.wire.ends import Side, is_reset

if TYPE_CHECKING:
    from fyntr.net.relay.pump import Lane

AVAILABLE = hasattr(os, "splice")
_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if AVAILABLE else 0
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux): fcntl itself is imported only to splice


class _Detached(asyncio.Protocol):
    """What a transport is left with once its socket has been taken over."""


def _take_socket(transport: asyncio.Transport, fd: int) -> socket.socket:
    """``fd``, a duplicate of the transport's socket, as a socket; the transport goes."""
    transport.set_protocol(_Detached())
    transport.abort()  # closes its own descriptor only: the socket lives on in ``fd``
    return socket.socket(fileno=fd)


class Splicer:
    """Hands bulk tunnels to ``SpliceRelay``, at most ``capacity`` at once: each holds
    four more descriptors (two pipes), which the server set aside in the FD limit."""

    __slots__ = ("active", "capacity", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self.loop = loop
        self.capacity = capacity
        self.active = 0

    def take(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        lanes: tuple[Lane, Lane],
        on_done: Callable[[Side | None, OSError | None], None],
    ) -> SpliceRelay | None:
        """Move a tunnel's sockets out of their transports and splice them; None (the
        transports untouched) when the descriptors for it cannot be had."""
        if self.active >= self.capacity:
            return None
        opened: list[int] = []
        try:
            for _ in range(2):
                opened.extend(_pipe())
            opened.append(os.dup(client.get_extra_info("socket").fileno()))
            opened.append(os.dup(upstream.get_extra_info("socket").fileno()))
        except OSError:  # EMFILE: stay on the transports
            for fd in opened:
                os.close(fd)
            return None
        up_pipe, down_pipe = (opened[0], opened[1]), (opened[2], opened[3])
        client_sock = _take_socket(client, opened[4])
        upstream_sock = _take_socket(upstream, opened[5])
        self.active += 1

        def done(side: Side | None, exc: OSError | None) -> None:
            self.active -= 1
            on_done(side, exc)

        relay = SpliceRelay(
            self.loop,
            client_sock,
            upstream_sock,
            lanes=lanes,
            pipes=(up_pipe, down_pipe),
            on_done=done,
        )
        relay.start()
        return relay


def _pipe() -> tuple[int, int]:
    import fcntl  # noqa: PLC0415  (POSIX only; splice() is Linux only anyway)

    pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    # Where the size is refused, the default pipe (64 KiB) is smaller: backpressure only
    # comes sooner.
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, HIGH_WATERMARK_BYTES)
    return pipe


class SpliceLane:
    """One direction of a spliced tunnel: ``src`` into the pipe, the pipe into ``dst``."""

    __slots__ = (
        "_loop",
        "_relay",
        "_wake",
        "dst",
        "held",
        "lane",
        "pipe",
        "reading",
        "src",
        "src_done",
        "writing",
    )

    def __init__(
        self,
        relay: SpliceRelay,
        lane: Lane,
        src: socket.socket,
        dst: socket.socket,
        pipe: tuple[int, int],
    ) -> None:
        self._relay = relay
        self._loop = relay.loop
        # The tunnel's direction: its byte count and EOF are kept there, whichever engine
        # moves the bytes, and the tunnel decides when both directions are done.
        self.lane = lane
        self.src = src
        self.dst = dst
        self.pipe = pipe
        self.held = 0  # bytes in the pipe
        self.src_done = False  # src sent its FIN
        self.reading = False
        self.writing = False
        self._wake: asyncio.TimerHandle | None = None  # out of rate tokens: read again then

    def start(self) -> None:
        self.reading = True
        self._loop.add_reader(self.src.fileno(), self.readable)

    def readable(self) -> None:
        room = HIGH_WATERMARK_BYTES - self.held
        if room <= 0:
            self._stop_reading()
            return
        # A rate in force (the auto rate engaged after the tunnel was spliced): the
        # kernel moves no more than the direction's token bucket allows.
        bucket = self.lane.pump.scheduler.bucket
        if bucket is not None:
            bucket.refill(self._loop.time())
            room = min(room, int(bucket.tokens))
            if room <= 0:
                self._stop_reading()
                if self._wake is None:
                    delay = max(RATE_TIMER_MIN_S, bucket.delay_for(QUANTUM_MAX_BYTES))
                    self._wake = self._loop.call_later(delay, self._tokens_due)
                return
        try:
            moved = os.splice(self.src.fileno(), self.pipe[1], room, flags=_FLAGS)
        except (BlockingIOError, InterruptedError):
            # Nothing to read after all, or the pipe is out of slots (it counts pages,
            # not bytes): in the second case wait until dst has taken some.
            if self.held:
                self._stop_reading()
            return
        except OSError as exc:
            self._relay.failed(self, exc, reading=True)
            return
        if not moved:
            self.src_done = True
            self._stop_reading()
            if not self.held:
                self._send_eof()
            return
        self.lane.nbytes += moved
        self.held += moved
        if bucket is not None:
            bucket.tokens -= moved
        self.flush()

    def flush(self) -> None:
        drained = False
        while self.held:
            try:
                moved = os.splice(self.pipe[0], self.dst.fileno(), self.held, flags=_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._relay.failed(self, exc, reading=False)
                return
            self.held -= moved
            drained = True
        if self.held and not self.writing:
            self.writing = True
            self._loop.add_writer(self.dst.fileno(), self.flush)
        elif not self.held and self.writing:
            self.writing = False
            self._loop.remove_writer(self.dst.fileno())
        if self.src_done:
            if not self.held:
                self._send_eof()
        elif self.held >= HIGH_WATERMARK_BYTES:
            self._stop_reading()  # the pipe is full: wait for dst
        elif drained and not self.reading:
            self.start()

    def _tokens_due(self) -> None:
        self._wake = None
        if not self.src_done and not self.reading:
            self.start()

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self._loop.remove_reader(self.src.fileno())

    def _send_eof(self) -> None:
        lane = self.lane
        if lane.eof_sent:
            return
        lane.eof_sent = True
        try:
            self.dst.shutdown(socket.SHUT_WR)  # half-close (docs/differences.md)
        except OSError as exc:
            self._relay.failed(self, exc, reading=False)
            return
        lane.on_eof_sent()

    def stop(self) -> None:
        self._stop_reading()
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self.writing:
            self.writing = False
            self._loop.remove_writer(self.dst.fileno())
        for fd in self.pipe:
            os.close(fd)


class SpliceRelay:
    """Both directions of a tunnel whose sockets fyntr has taken from the loop."""

    __slots__ = ("_client", "_finished", "_on_done", "_upstream", "down", "loop", "up")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: socket.socket,
        upstream: socket.socket,
        *,
        lanes: tuple[Lane, Lane],
        pipes: tuple[tuple[int, int], tuple[int, int]],
        on_done: Callable[[Side | None, OSError | None], None],
    ) -> None:
        self.loop = loop
        self._client = client
        self._upstream = upstream
        self._on_done = on_done  # called once: which side ended it, and how (None: both FINs)
        self._finished = False
        self.up = SpliceLane(self, lanes[0], client, upstream, pipes[0])
        self.down = SpliceLane(self, lanes[1], upstream, client, pipes[1])

    @property
    def upstream_socket(self) -> socket.socket:
        return self._upstream

    def start(self) -> None:
        self.up.start()
        self.down.start()

    def failed(self, where: SpliceLane, exc: OSError, *, reading: bool) -> None:
        # A read error is the source's, a write error the destination's (EPIPE after a
        # RST): name the side as the loop's transports would have.
        side = Side.CLIENT if (where.src is self._client) == reading else Side.UPSTREAM
        if is_reset(exc):  # pass the reset on: a FIN would make a truncated stream look whole
            send_rst_on_close(self._client)
            send_rst_on_close(self._upstream)
        self._end(side, exc)

    def finish(self) -> None:
        """Close both sockets and the pipes, at once, whatever is held: both directions
        are done, or the tunnel was aborted (its reason is set then)."""
        self._end(None, None)

    def _end(self, side: Side | None, exc: OSError | None) -> None:
        if self._finished:
            return
        self._finished = True
        self.up.stop()
        self.down.stop()
        self._client.close()
        self._upstream.close()
        self._on_done(side, exc)
