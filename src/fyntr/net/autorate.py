"""``--upload-rate auto`` on the loop: samples of the upstream sockets in, a rate out.

Every ``AUTORATE_TICK_S`` while tunnels are open, the upstream socket of each tunnel
with unacknowledged upload is read (``TCP_INFO``; net/tcpinfo.py): what the origin
acknowledged since the last tick (the achieved rate: what the network delivered, not
what fyntr wrote into socket buffers) and, from the sockets that carried data, the
recent RTT (the kernel's smoothing undone) above the socket's own floor (the queueing
delay). The pure controller
(sched/autorate.py) turns that into a rate for the upload pump. Tunnels with nothing
unacknowledged cost one comparison a tick; no timer runs while no tunnel is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from fyntr.config import AUTO, Settings
from fyntr.limits import AUTORATE_SEGMENTS_PER_ACK, AUTORATE_STALE_WEIGHT, AUTORATE_TICK_S
from fyntr.log import format_bytes, log
from fyntr.metrics import RateInfo
from fyntr.net import tcpinfo
from fyntr.net.pump import Pump
from fyntr.net.relay import Relay
from fyntr.sched.autorate import AutoRate, Phase, weighted_median


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


class AutoRateDriver:
    __slots__ = ("_last", "_loop", "_timer", "_tunnels", "baseline_s", "controller", "pump")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, pump: Pump, tunnels: Collection[Relay]
    ) -> None:
        self._loop = loop
        self.pump = pump
        self._tunnels = tunnels
        self.controller = AutoRate(loop.time())
        self.baseline_s: float | None = None  # the median floor of the sampled sockets
        self._timer: asyncio.TimerHandle | None = None
        self._last = loop.time()

    def wake(self) -> None:
        """A tunnel started: tick while there are tunnels."""
        if self._timer is None:
            self._last = self._loop.time()
            self._timer = self._loop.call_later(AUTORATE_TICK_S, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        now = self._loop.time()
        acked, delays, floors = self.sample()
        elapsed = max(now - self._last, 1e-3)
        self._last = now
        controller = self.controller
        before = controller.phase
        rate = controller.update(now, weighted_median(delays), acked / elapsed)
        self.baseline_s = weighted_median(floors) if floors else self.baseline_s
        if rate != self.pump.rate:
            self.pump.set_rate(rate)
        if controller.phase is not before:
            self._log_phase(before)
        if self._tunnels:
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
        """One INFO line when shaping starts, takes its rate and stops; DEBUG otherwise."""
        controller = self.controller
        phase = controller.phase
        delay = "n/a" if controller.delay_s is None else f"{controller.delay_s * 1000:.0f}ms"
        achieved = f"{format_bytes(int(controller.achieved))}/s"
        if phase is Phase.DRAINING:
            log.info(
                "auto upload rate: queueing delay %s at %s; holding uploads back until the "
                "queue drains",
                delay,
                achieved,
            )
        elif phase is Phase.UNSHAPED:
            log.info("auto upload rate: no queueing for a while; unlimited")
        elif before is Phase.DRAINING:
            assert controller.rate is not None
            log.info("auto upload rate: shaping at %s/s", format_bytes(int(controller.rate)))
        else:
            log.debug("auto upload rate: %s, queueing delay %s", phase.value, delay)

    def sample(self) -> tuple[int, list[tuple[float, int]], list[tuple[float, int]]]:
        """Bytes acknowledged since the last tick, and the queueing delay and RTT floor
        of each socket that carried data in it, with the bytes it moved."""
        acked = 0
        delays: list[tuple[float, int]] = []
        floors: list[tuple[float, int]] = []
        for tunnel in self._tunnels:
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
                delays.append((max(0.0, rtt - floor), delta))
                floors.append((floor, delta))
        return acked, delays, floors


def pumps_for(
    loop: asyncio.AbstractEventLoop, settings: Settings, relays: Collection[Relay]
) -> tuple[tuple[Pump, Pump], AutoRateDriver | None]:
    """One pump per direction at its configured rate; under --upload-rate auto, the
    upload's driven by the auto rate where TCP_INFO exists (else unlimited, said once)."""
    upload = settings.upload_rate
    pumps = (Pump(loop, 0 if upload == AUTO else upload), Pump(loop, settings.download_rate))
    if upload != AUTO:
        return pumps, None
    if not tcpinfo.AVAILABLE:
        log.warning("--upload-rate auto: no TCP_INFO on this platform; upload unlimited")
        return pumps, None
    return pumps, AutoRateDriver(loop, pumps[0], relays)
