"""``--upload-rate auto`` and ``--download-rate auto`` on the loop: samples of the
upstream sockets in, a rate per direction out.

Every ``AUTORATE_TICK_S`` while relays are open, each direction's sampler reads the
upstream sockets that moved data (``TCP_INFO``; net/tcpinfo.py): what the network
delivered since the last tick (bytes the origins acknowledged, on an upload; bytes
received, on a download) and, from the sockets that carried data, the recent RTT above
the socket's own floor (the queueing delay). The pure controller (sched/autorate.py)
turns that into a rate for the direction's pump. Relays to this machine cross no router
and are left out. No timer runs while no relay is open.

* Upload: the RTT is the sender's (the kernel's smoothing undone), and the pump is the
  lever: with ``TCP_NOTSENT_LOWAT`` on upstream sockets, what fyntr has not written out
  is what the link has not been given.
* Download: fyntr is the receiver, so the RTT is the kernel's receiver estimate (from the
  timestamps the origin's data echoes; it crosses the downlink's queue with the data),
  and the receive windows are the lever: an origin sends as far as they reach, whatever
  fyntr reads, and bytes that reached fyntr have crossed the downlink already, so
  holding them back would only delay them. While a download rate is in force each busy
  upstream socket's window is clamped (its buffer) to its share of the rate
  times the RTT floor plus half the threshold: what the flows have in flight is then
  about the link's rate over its base RTT plus that much queue. The download pump is
  never limited by auto; "the rate" is what the windows are sized for.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Collection
from typing import Protocol

from fyntr.config import AUTO, Settings
from fyntr.limits import (
    AUTORATE_RECEIVE_MIN_SEGMENTS,
    AUTORATE_SEGMENTS_PER_ACK,
    AUTORATE_STALE_WEIGHT,
    AUTORATE_TICK_S,
    AUTORATE_UNSENT_BYTES,
    AUTORATE_WINDOW_STEP,
)
from fyntr.log import format_bytes, log
from fyntr.metrics import RateInfo
from fyntr.net import tcpinfo
from fyntr.net.dialer import Dialed
from fyntr.net.pump import Pump
from fyntr.net.relay import Relay
from fyntr.net.sockopt import clamp_window, limit_unsent, unclamp_window
from fyntr.sched.autorate import AutoRate, PathFloors, Phase, receive_window, weighted_median

Samples = list[tuple[float, int]]  # (value, bytes moved) per socket
ETHERNET_MSS = 1460  # a new socket's segment size until it has received (1500 - 40)


def recent_rtt(previous: float, srtt: float, acks: float) -> float | None:
    """The mean RTT of the ``acks`` samples taken since ``previous``, undoing the
    kernel's smoothing (srtt += (sample - srtt) / 8 per ACK, RFC 6298), or None when
    too few came in to tell: a socket that was idle keeps an old srtt, and 100-250 ms of
    it were read as queueing after a drain while the router's queue was empty."""
    if previous <= 0:  # the first look since the socket was idle: its srtt may be old
        return None
    kept = (7 / 8) ** acks  # the weight the old srtt still has
    if kept > AUTORATE_STALE_WEIGHT:
        return None
    return float((srtt - kept * previous) / (1 - kept))


class Sampler(Protocol):
    """One direction's view of the upstream sockets."""

    name: str  # "upload" or "download"
    starts: bool  # a burst starts held back (sched/autorate.AutoRate.start)

    def sample(self, relays: Collection[Relay]) -> tuple[int, Samples, Samples]:
        """Bytes the network delivered since the last tick, and the queueing delay and
        RTT floor of each socket that carried data in it, with the bytes it moved."""

    def steer(self, rate: float | None, baseline_s: float | None) -> None:
        """The controller put ``rate`` in force (None: unlimited)."""

    def dialed(self, transport: asyncio.WriteTransport) -> None:
        """A new upstream socket that crosses a router."""


class UploadSampler:
    """Bytes acknowledged and the sender's RTT (the marks live on the relays); steers
    the upload pump."""

    name = "upload"
    starts = True  # fyntr holds what it uploads: it can release a burst gradually

    def __init__(self, pump: Pump) -> None:
        self.pump = pump
        self.floors = PathFloors()

    def sample(self, relays: Collection[Relay]) -> tuple[int, Samples, Samples]:
        acked = 0
        # (destination, the tick's mean RTT, the kernel's minimum, bytes acknowledged)
        seen: list[tuple[str, float, float, int]] = []
        for tunnel in relays:
            if not tunnel.routed:  # loopback: no uplink, no queue of the router's
                continue
            sent = tunnel.up.nbytes - tunnel.sent_base  # by this upstream socket
            if sent < tunnel.acked_mark:  # all acknowledged: nothing to learn
                tunnel.srtt_mark = 0.0  # idle: its srtt will be old when it sends again
                continue
            sock = tunnel.upstream_socket()
            sample = None if sock is None else tcpinfo.read(sock)
            if sample is None:
                continue
            if sample.bytes_acked is None:  # macOS: count what fyntr passed on instead
                delta = sent + 1 - tunnel.acked_mark
                tunnel.acked_mark = sent + 1
            else:
                delta = sample.bytes_acked - tunnel.acked_mark
                tunnel.acked_mark = sample.bytes_acked
            floor = sample.min_rtt_s
            if floor is None:
                floor = tunnel.rtt_floor = min(tunnel.rtt_floor, sample.rtt_s)
            if delta <= 0:  # data in flight, no ACK this tick: its samples are to come
                continue
            acked += delta
            # ACKs so far: segments in, on an upload; on macOS about one per two segments.
            count = (
                sample.segs_in
                if sample.segs_in is not None
                else tunnel.acked_mark / (AUTORATE_SEGMENTS_PER_ACK * max(sample.mss, 1))
            )
            rtt = recent_rtt(tunnel.srtt_mark, sample.rtt_s, count - tunnel.segs_mark)
            if rtt is not None or tunnel.srtt_mark <= 0:
                tunnel.srtt_mark, tunnel.segs_mark = sample.rtt_s, count
            if rtt is not None:  # else count on: the next tick looks over a longer span
                seen.append((tunnel.target, rtt, floor, delta))
        return acked, *self.floors.delays(seen)

    def steer(self, rate: float | None, baseline_s: float | None) -> None:
        if rate != self.pump.rate:
            self.pump.set_rate(rate)

    def dialed(self, transport: asyncio.WriteTransport) -> None:
        """What waits unsent beyond fyntr stays small (``limit_unsent``)."""
        limit_unsent(transport, AUTORATE_UNSENT_BYTES)


class Receiving:
    """What the download sampler last read of one relay's upstream socket."""

    __slots__ = ("busy", "fd", "floor", "nbytes", "received", "sock", "window")

    def __init__(self, sock: socket.socket, fd: int) -> None:
        self.sock = sock
        self.fd = fd  # the socket it is about: a plain HTTP session changes origins
        self.nbytes = -1  # relay.down.nbytes then: unchanged, nothing was read
        self.received = 0  # the kernel's bytes received then
        self.floor = float("inf")  # the lowest RTT seen either way
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


class AutoRateDriver:
    __slots__ = (
        "_clock",
        "_last",
        "_loop",
        "_relays",
        "_timer",
        "baseline_s",
        "controller",
        "sampler",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        relays: Collection[Relay],
        sampler: Sampler,
    ) -> None:
        """``clock``: the server's (the loop's time in production), so that the
        controller's history and /status's ages are read on one clock."""
        self._loop = loop
        self._clock = clock
        self._relays = relays
        self.sampler = sampler
        self.controller = AutoRate(clock())
        self.baseline_s: float | None = None  # the median floor of the sampled sockets
        self._timer: asyncio.TimerHandle | None = None
        self._last = clock()

    def wake(self) -> None:
        """A relay started: tick while there are relays."""
        if self._timer is None:
            self._last = self._clock()
            self._timer = self._loop.call_later(AUTORATE_TICK_S, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sample(self) -> tuple[int, Samples, Samples]:
        return self.sampler.sample(self._relays)

    def dialed(self, dialed: Dialed) -> None:
        """A new upstream socket that crosses a router: the sampler's options, and, for
        the upload, the start of a burst (sched/autorate.AutoRate.start)."""
        self.sampler.dialed(dialed.transport)
        if not self.sampler.starts:
            return
        controller = self.controller
        before = controller.phase
        rate = controller.start(self._clock(), dialed.connect_s)
        if controller.phase is not before:
            self.sampler.steer(rate, self.baseline_s)
            self._log_phase(before)

    def _tick(self) -> None:
        self._timer = None
        now = self._clock()
        moved, delays, floors = self.sample()
        elapsed = max(now - self._last, 1e-3)
        self._last = now
        controller = self.controller
        before = controller.phase
        self.baseline_s = weighted_median(floors) if floors else self.baseline_s
        rate = controller.update(
            now, weighted_median(delays), moved / elapsed, self.baseline_s or 0.0
        )
        self.sampler.steer(rate, self.baseline_s)
        if controller.phase is not before:
            self._log_phase(before)
        if self._relays:
            self._timer = self._loop.call_later(AUTORATE_TICK_S, self._tick)

    def info(self, now: float) -> RateInfo:
        controller = self.controller
        return RateInfo(
            rate=controller.rate,
            auto=True,
            phase=controller.phase.value,
            queueing_delay_s=controller.delay_s,
            baseline_rtt_s=self.baseline_s,
            achieved=round(controller.achieved),
            history=[
                (round(now - p.at, 3), p.rate, round(p.achieved), p.delay_s)
                for p in controller.history
            ],
        )

    def _log_phase(self, before: Phase) -> None:
        """One INFO line when shaping starts, when it takes its rate, and when it stops;
        DEBUG otherwise (a burst starting held back, every step)."""
        controller = self.controller
        name = self.sampler.name
        phase = controller.phase
        delay = "n/a" if controller.delay_s is None else f"{controller.delay_s * 1000:.0f}ms"
        achieved = f"{format_bytes(int(controller.achieved))}/s"
        if phase is Phase.STARTING:  # every burst after a quiet spell: not news
            log.debug(
                "auto %s rate: a burst across a router begins; releasing it from %s/s up",
                name,
                format_bytes(int(controller.rate or 0)),
            )
        elif phase is Phase.DRAINING:
            log.info(
                "auto %s rate: queueing delay %s at %s; holding %ss back until the queue drains",
                name,
                delay,
                achieved,
                name,
            )
        elif phase is Phase.UNSHAPED:
            log.info("auto %s rate: no queueing for a while; unlimited", name)
        elif before in (Phase.DRAINING, Phase.STARTING):
            assert controller.rate is not None
            log.info("auto %s rate: shaping at %s/s", name, format_bytes(int(controller.rate)))
        else:
            log.debug("auto %s rate: %s, queueing delay %s", name, phase.value, delay)


class AutoRates:
    """The auto rate of each direction that has one (None: a fixed rate or unlimited)."""

    __slots__ = ("download", "drivers", "upload")

    def __init__(self, upload: AutoRateDriver | None, download: AutoRateDriver | None) -> None:
        self.upload = upload
        self.download = download
        # Once, not on every tunnel's start and dial.
        self.drivers = tuple(d for d in (upload, download) if d is not None)

    def wake(self) -> None:
        for driver in self.drivers:
            driver.wake()

    def close(self) -> None:
        for driver in self.drivers:
            driver.close()

    def dialed(self, dialed: Dialed) -> None:
        if dialed.routed:
            for driver in self.drivers:
                driver.dialed(dialed)


def pumps_for(
    loop: asyncio.AbstractEventLoop,
    clock: Callable[[], float],
    settings: Settings,
    relays: Collection[Relay],
) -> tuple[tuple[Pump, Pump], AutoRates]:
    """One pump per direction at its configured rate; a direction set to auto is driven
    by its auto rate where the kernel gives its samples (else unlimited, said once)."""
    upload, download = settings.upload_rate, settings.download_rate
    pumps = (
        Pump(loop, 0 if upload == AUTO else upload),
        Pump(loop, 0 if download == AUTO else download),
    )

    def driver(setting: int | str, available: bool, sampler: Sampler) -> AutoRateDriver | None:
        if setting != AUTO:
            return None
        if not available:
            why = "the kernel keeps no receiver RTT" if tcpinfo.AVAILABLE else "no TCP_INFO"
            log.warning("--%s-rate auto: %s here; unlimited", sampler.name, why)
            return None
        return AutoRateDriver(loop, clock, relays, sampler)

    return pumps, AutoRates(
        driver(upload, tcpinfo.AVAILABLE, UploadSampler(pumps[0])),
        driver(download, tcpinfo.RECEIVER_RTT, DownloadSampler()),
    )
