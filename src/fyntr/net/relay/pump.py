"""Binds the DRR scheduler to the event loop (docs/architecture.md).

One ``Pump`` per direction (upload, download), shared by every tunnel. A ``Lane`` is one
direction of one tunnel: the scheduler's ``Flow`` plus the two transports it joins.

The fast path costs one comparison: while a lane has nothing queued, its destination is
not paused and no rate is set, a chunk is written straight through in ``data_received``.
Only when data must wait does it join the scheduler, and only while a rate holds data
back is the pump's one timer armed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from fyntr.limits import (
    AUTORATE_KERNEL_UNSENT_BYTES,
    AUTORATE_UNSENT_POLL_S,
    HIGH_WATERMARK_BYTES,
    LOW_WATERMARK_BYTES,
    RATE_BURST_MIN_BYTES,
    RATE_BURST_S,
    RATE_TIMER_MIN_S,
)
from fyntr.net.kernel.sockopt import unsent_bytes
from fyntr.sched.drr import UNBOUNDED, Chunk, Flow, Scheduler, TokenBucket

NEVER = 2**63  # a byte count no lane reaches


def no_bulk() -> None:
    """``Lane.on_bulk`` of a lane that is never handed to the kernel."""


class Lane(Flow):
    """One direction of one relay: bytes from ``src`` (read side) to ``dst`` (write side).
    Its byte count and EOF are the direction's record whichever engine moves the bytes
    (these transports, or net/relay/splice.py once the tunnel is spliced)."""

    __slots__ = (
        "dst",
        "dst_full",
        "eof_pending",
        "eof_sent",
        "kernel_full",
        "nbytes",
        "on_bulk",
        "on_eof_sent",
        "pump",
        "splice_at",
        "src",
        "src_paused",
        "unsent_fd",
    )

    def __init__(
        self,
        pump: Pump,
        src: asyncio.Transport,
        dst: asyncio.Transport,
        on_eof_sent: Callable[[], bool],
        client: object = None,
        *,
        routed: bool = False,
    ) -> None:
        """``client``: whose lane it is (an address): the pump's rounds are over clients
        first (sched/drr.py); None: the one default client. ``routed``: ``dst`` crosses a
        router (``retarget``)."""
        super().__init__(owner=None if client is None else pump.scheduler.owner(client))
        self.pump = pump
        self.src = src
        self.on_eof_sent = on_eof_sent
        self.nbytes = 0  # bytes read from src
        self.splice_at = NEVER  # nbytes at which to call on_bulk (net/relay/splice.py)
        self.on_bulk = no_bulk
        self.src_paused = False  # we paused reading src
        self.eof_pending = False  # src sent EOF; pass it on once the queue is empty
        self.eof_sent = False
        self.dst_full = False  # dst's write buffer is above its high mark
        self.kernel_full = False  # dst's socket holds too much unsent: parked until it sends
        self.dst: asyncio.Transport
        self.unsent_fd: int  # dst's socket, whose unsent bytes a rate keeps small; -1: not
        self.retarget(dst, routed)

    def retarget(self, dst: asyncio.Transport, routed: bool) -> None:
        """Write to ``dst`` from now on. Under the upload auto rate, a socket that crosses
        a router (``routed``) is kept to AUTORATE_KERNEL_UNSENT_BYTES unsent while a
        rate is in force (``Pump.watch_unsent``)."""
        self.dst = dst
        sock = dst.get_extra_info("socket") if routed and self.pump.watches_unsent else None
        self.unsent_fd = -1 if sock is None else sock.fileno()
        # Parked only after a write: one as large as a read (16-20 KiB) let 40 sockets
        # hold 0.5-0.8 MB unsent under the bound (fibre profile: 17 ms of queue kept
        # for 0.5 s after every cut).
        self.write_max = UNBOUNDED if sock is None else AUTORATE_KERNEL_UNSENT_BYTES

    def own(self, client: object) -> None:
        """Scheduled as ``client`` from now on (plain HTTP learns its user from the first
        request); only while nothing is queued."""
        assert not self.queued
        self.owner = self.pump.scheduler.owner(client)

    def push(self, data: bytes) -> None:
        """A chunk read from ``src``: the hot path."""
        self.nbytes += len(data)
        if self.queued or self.parked or self.pump.shaped:
            self.pump.hold(self, data)
        else:
            self.write(data)
            if self.nbytes >= self.splice_at:
                self.on_bulk()

    def write(self, data: Chunk) -> None:
        """Every write to ``dst``. uvloop raises when an error (a reset) has closed dst's
        handle and its connection_lost is still on the way, where asyncio drops the
        bytes: drop them here too, and let that connection_lost end the tunnel as the
        reset it is (not as an error of this side's, which would close with a FIN)."""
        try:
            self.dst.write(data)
        except RuntimeError:
            if not self.dst.is_closing():
                raise
            return
        if self.unsent_fd >= 0 and self.pump.shaped:
            self.pump.watch_unsent(self)

    def finish(self) -> None:
        """``src`` sent EOF: deliver what is queued, then pass the FIN on (docs/differences.md)."""
        if self.queued:
            self.eof_pending = True
        else:
            self._send_eof()

    def _send_eof(self) -> None:
        self.eof_pending = False
        if not self.eof_sent:
            self.eof_sent = True
            # on_eof_sent closes the tunnel once both ways are done; close() sends this
            # FIN then, so a shutdown() here would be a wasted system call.
            if not self.on_eof_sent() and not self.dst.is_closing():
                self.dst.write_eof()

    def dst_paused_writing(self) -> None:
        self.dst_full = True
        self.pump.scheduler.park(self)
        self.pause_src()

    def dst_resumed_writing(self) -> None:
        self.dst_full = False
        self.go_on()

    def kernel_sent(self) -> None:
        """Its socket has sent what it held, or the bound is lifted."""
        self.kernel_full = False
        self.go_on()

    def go_on(self) -> None:
        """Neither dst's write buffer nor its socket is full any more: take turns again
        (even when empty: a parked lane would never list), and read src again once
        nothing waits."""
        if self.dst_full or self.kernel_full:
            return
        self.pump.scheduler.unpark(self)
        if self.queued:
            self.pump.service()
        else:
            self.resume_src()

    def pause_src(self) -> None:
        if not self.src_paused:
            self.src_paused = True
            self.src.pause_reading()

    def resume_src(self) -> None:
        if self.src_paused and not self.src.is_closing():
            self.src_paused = False
            self.src.resume_reading()

    def held(self) -> int:
        """Everything the proxy holds for this lane: queue plus dst's write buffer."""
        return self.queued + self.dst.get_write_buffer_size()

    def discard(self) -> None:
        self.pump.scheduler.drop(self)
        self.eof_pending = False


class Pump:
    """One direction's scheduler, its optional token bucket and its one timer."""

    __slots__ = (
        "_loop",
        "_poll",
        "_timer",
        "_unsent",
        "_wake_at",
        "scheduler",
        "shaped",
        "watches_unsent",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, rate: float = 0) -> None:
        self._loop = loop
        self.scheduler = Scheduler()
        self.shaped = False
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = 0.0  # when the timer fires
        self.watches_unsent = False  # set by the upload auto rate (Lane.retarget)
        self._unsent: list[Lane] = []  # lanes parked while their socket sends
        self._poll: asyncio.TimerHandle | None = None
        if rate > 0:
            self.set_rate(rate)

    @property
    def rate(self) -> float | None:
        bucket = self.scheduler.bucket
        return None if bucket is None else bucket.rate

    def set_rate(self, rate: float | None) -> None:
        """Put ``rate`` (bytes/s) in force, or none: fixed at start, or as the auto-rate
        controller decides. What is queued drains at the new rate."""
        sched = self.scheduler
        now = self._loop.time()
        burst = 0.0 if rate is None else max(rate * RATE_BURST_S, RATE_BURST_MIN_BYTES)
        if rate is None:
            sched.bucket = None
        elif sched.bucket is None:
            sched.bucket = TokenBucket(rate, burst, now)
        else:
            sched.bucket.reset(rate, burst, now)
        self.shaped = sched.bucket is not None
        if not self.shaped:
            self._release_unsent()
        if sched.backlogged:
            self.service()

    def _release_unsent(self) -> None:
        """No rate in force: every lane parked on its socket's unsent bytes goes on."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        lanes, self._unsent = self._unsent, []
        for lane in lanes:
            if lane.kernel_full:
                lane.kernel_sent()

    def watch_unsent(self, lane: Lane) -> None:
        """After a write under a rate (one ioctl): a routed socket that holds more than
        AUTORATE_KERNEL_UNSENT_BYTES unsent is written no more until it has sent it.
        TCP_NOTSENT_LOWAT alone let 40 sockets hold 0.8-1.0 MB past the shaper
        (docs/zero-configuration.md), which kept the router's queue full for a second
        after every cut, and for 2.5 s after LTE's step from 40 to 10 Mbit/s."""
        if unsent_bytes(lane.unsent_fd) <= AUTORATE_KERNEL_UNSENT_BYTES:
            return
        lane.kernel_full = True
        self.scheduler.park(lane)
        self._unsent.append(lane)
        self._arm_poll()

    def _on_poll(self) -> None:
        """Unpark the lanes whose socket has sent enough; look again later at the rest.
        A lane that goes on may be parked again by its next write (``watch_unsent``),
        which re-arms the poll."""
        self._poll = None
        lanes, self._unsent = self._unsent, []
        for lane in lanes:
            if not lane.kernel_full:  # released already
                continue
            if (
                not lane.dst.is_closing()
                and unsent_bytes(lane.unsent_fd) > AUTORATE_KERNEL_UNSENT_BYTES
            ):
                self._unsent.append(lane)
            else:
                lane.kernel_sent()
        if self._unsent:
            self._arm_poll()

    def _arm_poll(self) -> None:
        if self._poll is None:
            self._poll = self._loop.call_later(AUTORATE_UNSENT_POLL_S, self._on_poll)

    @property
    def queued_bytes(self) -> int:
        sched = self.scheduler
        return sum(f.queued for f in sched.new) + sum(f.queued for f in sched.old)

    def hold(self, lane: Lane, data: bytes) -> None:
        """The chunk cannot go straight through: it waits for its DRR turn, unless only
        the rate was in question, the budget allows it now and it is no bigger than a
        quantum or the lane's largest write. A whole 256 KiB read let through at the start
        of a burst would give the first flows a head start DRR cannot take back (shaped
        burst Jain: 0.93 letting whole reads through, 0.98 holding them to a quantum)."""
        sched = self.scheduler
        if not (lane.queued or lane.parked or sched.backlogged):
            bucket = sched.bucket
            assert bucket is not None  # shaped: the only other reason to be here
            bucket.refill(self._loop.time())
            size = len(data)
            if bucket.tokens >= size and size <= lane.quantum and size <= lane.write_max:
                bucket.tokens -= size
                lane.write(data)
                return
        sched.enqueue(lane, data)
        if not lane.src_paused and lane.held() > HIGH_WATERMARK_BYTES:
            lane.pause_src()
        if not lane.parked:
            self.service()

    def service(self) -> None:
        sched = self.scheduler
        now = self._loop.time()
        sched.service(now, self._write)
        delay = sched.next_wake()
        if delay is None:
            return
        # A new flow may need its turn sooner than the timer armed for a quantum.
        if self._timer is None or now + delay < self._wake_at - RATE_TIMER_MIN_S:
            if self._timer is not None:
                self._timer.cancel()
            self._wake_at = now + delay
            self._timer = self._loop.call_at(self._wake_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.service()

    def _write(self, flow: Flow, chunk: Chunk) -> None:
        lane = cast(Lane, flow)
        lane.write(chunk)
        if not lane.queued and lane.eof_pending:
            lane._send_eof()
        # Resume below a quarter of the high mark; or once the queue is empty, since the
        # destination's own watermarks (the same numbers) then take over: nothing else
        # would tell us when a write buffer between the marks drains.
        if (
            lane.src_paused
            and not lane.parked
            and (not lane.queued or lane.held() <= LOW_WATERMARK_BYTES)
        ):
            lane.resume_src()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
