"""Each direction's view of the upstream sockets, for the auto rates (net/watch/autorate.py):
what the network delivered since the last tick and the queueing delay the sockets saw.

* Upload: the RTT is the sender's (the kernel's smoothing undone, sched/autorate.recent_rtt),
  and ``TCP_NOTSENT_LOWAT`` on upstream sockets makes what fyntr has not written out what
  the link has not been given.
* Download: fyntr is the receiver, so the RTT is the kernel's receiver estimate, and the
  receive windows are the lever (clamped while a rate is in force).
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Collection
from typing import Protocol

from fyntr.limits import (
    AUTORATE_RECEIVE_MIN_SEGMENTS,
    AUTORATE_SEGMENTS_PER_ACK,
    AUTORATE_TICK_S,
    AUTORATE_UNSENT_BYTES,
    AUTORATE_WINDOW_STEP,
)
from fyntr.net.kernel import tcpinfo
from fyntr.net.kernel.sockopt import clamp_window, limit_unsent, unclamp_window
from fyntr.net.relay.pump import Pump
from fyntr.net.relay.tunnel import Relay
from fyntr.sched.measure import PathFloors, receive_window, recent_rtt

Samples = list[tuple[float, int]]  # (value, bytes moved) per socket
ETHERNET_MSS = 1460  # a new socket's segment size until it has received (1500 - 40)


class Sampler(Protocol):
    """One direction's view of the upstream sockets."""

    name: str  # "upload" or "download"
    starts: bool  # a burst starts held back (sched/autorate.RateController.start)

    def sample(self, relays: Collection[Relay]) -> tuple[int, Samples, Samples]:
        """Bytes the network delivered since the last tick, and the queueing delay and
        RTT floor of each socket that carried data in it, with the bytes it moved."""

    def steer(self, rate: float | None, baseline_s: float | None) -> None:
        """The controller put ``rate`` in force (None: unlimited)."""

    def dialed(self, transport: asyncio.WriteTransport) -> None:
        """A new upstream socket that crosses a router."""

    def holding(self) -> bool:
        """fyntr holds data back at the rate: the flows want more than it."""


class Sending:
    """What the upload sampler last read of one relay's upstream socket."""

    __slots__ = ("acked", "floor", "segs", "since", "srtt")

    def __init__(self, since: int) -> None:
        self.since = since  # the relay's upstream_since: another value, another socket
        self.acked = 1  # bytes the origin had acknowledged (the SYN counts one)
        self.floor = math.inf  # the lowest RTT seen, where the kernel keeps none
        self.srtt = 0.0  # the smoothed RTT then (0: idle since, so old when it sends)
        self.segs = 0.0  # ACKs received then


class UploadSampler:
    """Bytes acknowledged and the sender's RTT; steers the upload pump."""

    name = "upload"
    starts = True  # fyntr holds what it uploads: it can release a burst gradually

    def __init__(self, pump: Pump) -> None:
        self.pump = pump
        self.floors = PathFloors()
        self._marks: dict[Relay, Sending] = {}

    def sample(self, relays: Collection[Relay]) -> tuple[int, Samples, Samples]:
        acked = 0
        # (destination, the tick's mean RTT, the kernel's minimum, bytes acknowledged)
        seen: list[tuple[str, float, float, int]] = []
        marks: dict[Relay, Sending] = {}
        for relay in relays:
            if not relay.routed:  # loopback: no uplink, no queue of the router's
                continue
            mark = self._marks.get(relay)
            if mark is None or mark.since != relay.upstream_since:
                mark = Sending(relay.upstream_since)
            marks[relay] = mark
            sent = relay.up.nbytes - mark.since  # by this upstream socket
            if sent < mark.acked:  # all acknowledged: nothing to learn
                mark.srtt = 0.0  # idle: its srtt will be old when it sends again
                continue
            sock = relay.upstream_socket()
            sample = None if sock is None else tcpinfo.read(sock)
            if sample is None:
                continue
            if sample.bytes_acked is None:  # macOS: count what fyntr passed on instead
                delta = sent + 1 - mark.acked
                mark.acked = sent + 1
            else:
                delta = sample.bytes_acked - mark.acked
                mark.acked = sample.bytes_acked
            floor = sample.min_rtt_s
            if floor is None:
                floor = mark.floor = min(mark.floor, sample.rtt_s)
            if delta <= 0:  # data in flight, no ACK this tick: its samples are to come
                continue
            acked += delta
            # ACKs so far: segments in, on an upload; on macOS about one per two segments.
            count = (
                sample.segs_in
                if sample.segs_in is not None
                else mark.acked / (AUTORATE_SEGMENTS_PER_ACK * max(sample.mss, 1))
            )
            rtt = recent_rtt(mark.srtt, sample.rtt_s, count - mark.segs)
            if rtt is not None or mark.srtt <= 0:
                mark.srtt, mark.segs = sample.rtt_s, count
            if rtt is not None:  # else count on: the next tick looks over a longer span
                seen.append((relay.target, rtt, floor, delta))
        self._marks = marks
        return acked, *self.floors.delays(seen)

    def steer(self, rate: float | None, baseline_s: float | None) -> None:
        if rate != self.pump.rate:
            self.pump.set_rate(rate)

    def dialed(self, transport: asyncio.WriteTransport) -> None:
        """What waits unsent beyond fyntr stays small (``limit_unsent``)."""
        limit_unsent(transport, AUTORATE_UNSENT_BYTES)

    def holding(self) -> bool:
        return self.pump.shaped and self.pump.scheduler.backlogged


class Receiving:
    """What the download sampler last read of one relay's upstream socket."""

    __slots__ = ("busy", "fd", "floor", "nbytes", "received", "sock", "window")

    def __init__(self, sock: socket.socket, fd: int) -> None:
        self.sock = sock
        self.fd = fd  # the socket it is about: a plain HTTP session changes origins
        self.nbytes = -1  # relay.down.nbytes then: unchanged, nothing was read
        self.received = 0  # the kernel's bytes received then
        self.floor = math.inf  # the lowest RTT seen either way
        self.busy = False  # it received data in the last tick
        self.window: int | None = None  # the receive window clamped to; None: none


class DownloadSampler:
    """Bytes received and the receiver's RTT; steers the receive windows."""

    name = "download"
    # What the origins send is theirs to pace: a window clamped before any sample would
    # slow every download across a router for its first second.
    starts = False

    def __init__(self) -> None:
        self.floors = PathFloors()
        self._marks: dict[Relay, Receiving] = {}
        self._busy: list[tuple[Receiving, int]] = []  # (mark, MSS) that received this tick
        self.window: int | None = None  # per busy socket while a rate is in force

    def sample(self, relays: Collection[Relay]) -> tuple[int, Samples, Samples]:
        received = 0
        seen: list[tuple[str, float, float, int]] = []
        marks: dict[Relay, Receiving] = {}
        busy: list[tuple[Receiving, int]] = []
        for relay in relays:
            if not relay.routed:  # loopback: no downlink, no queue of the router's
                continue
            mark = self._marks.get(relay)
            nbytes = relay.down.nbytes
            if mark is not None and mark.nbytes == nbytes:  # fyntr read nothing of it
                mark.busy = False
                marks[relay] = mark
                continue
            sock = relay.upstream_socket()
            sample = None if sock is None else tcpinfo.read(sock)
            if sock is None or sample is None or sample.bytes_received is None:
                if mark is not None:  # kept: a clamp it holds must still come off
                    marks[relay] = mark
                continue
            fd = sock.fileno()
            if mark is None or mark.fd != fd or sample.bytes_received < mark.received:
                mark = Receiving(sock, fd)  # a new socket: all it received is new
            delta = sample.bytes_received - mark.received
            mark.received, mark.nbytes = sample.bytes_received, nbytes
            marks[relay] = mark
            was_busy, mark.busy = mark.busy, delta > 0
            if delta <= 0:
                continue
            received += delta
            busy.append((mark, sample.mss))
            rcv_rtt = sample.rcv_rtt_s
            # The handshake's RTT (min_rtt) is the floor the data's RTT sits on.
            for rtt in (sample.min_rtt_s, rcv_rtt):
                if rtt is not None and rtt < mark.floor:
                    mark.floor = rtt
            # The kernel's estimate moves 1/8 per sample, one sample per window of full
            # segments: only a socket that was busy the tick before has a recent one.
            if (
                was_busy
                and rcv_rtt is not None
                and delta >= AUTORATE_RECEIVE_MIN_SEGMENTS * sample.mss
            ):
                # A segment echoes the newest ACK the origin had when it sent it: one
                # that spaces its segments (pacing, or writing slowly) adds up to the
                # gap between them, which is no queue: take the tick's mean gap off.
                gap = AUTORATE_TICK_S * sample.mss / delta
                seen.append((relay.target, rcv_rtt - gap, mark.floor, delta))
        self._marks, self._busy = marks, busy
        return received, *self.floors.delays(seen)

    def steer(self, rate: float | None, baseline_s: float | None) -> None:
        """Clamp each busy socket's receive window to its share of ``rate``
        (``receive_window``), or lift the clamps once no rate is in force."""
        if rate is None:
            if self.window is not None:
                self.window = None
                for mark in self._marks.values():
                    if mark.window is not None:
                        mark.window = None
                        unclamp_window(mark.sock)
            return
        flows = len(self._busy)
        self.window = receive_window(rate, baseline_s or 0.0, flows, ETHERNET_MSS)
        for mark, mss in self._busy:
            window = receive_window(rate, baseline_s or 0.0, flows, mss)
            last = mark.window
            if last is None or abs(window - last) > last * AUTORATE_WINDOW_STEP:
                mark.window = window
                clamp_window(mark.sock, window)

    def dialed(self, transport: asyncio.WriteTransport) -> None:
        """While a rate is in force, its window starts clamped: a new flow's first
        window (64 KiB) would otherwise go to the router's queue."""
        sock = transport.get_extra_info("socket")
        if self.window is not None and sock is not None:
            clamp_window(sock, self.window)

    def holding(self) -> bool:
        """What the origins have not sent waits at their end, not in fyntr."""
        return False
