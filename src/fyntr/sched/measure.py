"""What the kernel's per-socket readings become before the controller sees them. Pure.

A destination's RTT floor (``PathFloors``: jitter is not queue, a lucky sample is not the
floor), the recent RTT under the kernel's smoothing (``recent_rtt``), byte-weighted
quantiles over sockets, and the receive window a download rate sizes
(docs/zero-configuration.md).
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from collections.abc import Collection

from fyntr.limits import (
    AUTORATE_DELAY_THRESHOLD_S,
    AUTORATE_FLOOR_FALL,
    AUTORATE_FLOOR_RISE,
    AUTORATE_FLOORS_KEPT,
    AUTORATE_JITTER_ALLOWANCE_S,
    AUTORATE_JITTER_GAP_S,
    AUTORATE_STALE_WEIGHT,
    AUTORATE_WINDOW_MIN_SEGMENTS,
)


class PathFloors:
    """The RTT with no queue on the way to each destination, for the queueing delay.

    The kernel's minimum RTT is one lucky packet: on a link with jitter (Wi-Fi, LTE) the
    mean RTT sits above it by the jitter with no queue at all (15 ms on a 50 ms +-15 ms
    link), which read as bloat stopped the rate from ever rising. So the floor of a
    destination follows the mean RTT its sockets report per tick (the median over them
    once a tick): down by ``AUTORATE_FLOOR_FALL`` of the gap a tick, up as fast to a tick
    at most ``AUTORATE_JITTER_GAP_S`` above, ten times slower to one further up
    (``AUTORATE_FLOOR_RISE``: bloat, or a route that got longer), and never more than
    ``AUTORATE_JITTER_ALLOWANCE_S`` above the kernel's minimum: sockets opened into a
    queue that was already full see no tick without it, and their queue must still show.
    Keyed by the requested host and port; at most ``AUTORATE_FLOORS_KEPT`` of them."""

    __slots__ = ("_floors",)

    def __init__(self) -> None:
        self._floors: OrderedDict[str, float] = OrderedDict()

    def update(self, key: str, mean_rtt_s: float) -> None:
        """One tick's mean RTT to ``key`` (once a tick per destination)."""
        floors = self._floors
        floor = floors.get(key)
        if floor is None:
            floor = mean_rtt_s
        elif mean_rtt_s < floor:
            floor -= (floor - mean_rtt_s) * AUTORATE_FLOOR_FALL
        else:
            # A jitter-sized rise is followed as fast as a fall, so that the floor sits
            # at the median of the ticks with no queue, not at a lucky first one (LTE
            # read 8-13 ms of queue for seconds on a floor taken at the start, above
            # the 10 ms under which the rate may rise); a bloat-sized one, slowly.
            gap = mean_rtt_s - floor
            rise = AUTORATE_FLOOR_FALL if gap <= AUTORATE_JITTER_GAP_S else AUTORATE_FLOOR_RISE
            floor += gap * rise
        floors[key] = floor
        floors.move_to_end(key)
        if len(floors) > AUTORATE_FLOORS_KEPT:
            floors.popitem(last=False)

    def floor(self, key: str, kernel_min_s: float) -> float:
        """The floor to measure ``key``'s queueing delay from."""
        ceiling = kernel_min_s + AUTORATE_JITTER_ALLOWANCE_S
        return min(self._floors.get(key, ceiling), ceiling)

    def delays(
        self, seen: Collection[tuple[str, float, float, int]]
    ) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """One tick's sockets as (destination, mean RTT, the kernel's minimum, bytes
        moved): each destination's floor learns from the median of its sockets' RTTs,
        then each socket's queueing delay above its floor and that floor, with its bytes."""
        by_destination: dict[str, list[float]] = {}
        for key, rtt, _kernel_min, _moved in seen:
            by_destination.setdefault(key, []).append(rtt)
        for key, rtts in by_destination.items():
            self.update(key, statistics.median(rtts))
        delays: list[tuple[float, int]] = []
        floors: list[tuple[float, int]] = []
        for key, rtt, kernel_min, moved in seen:
            floor = self.floor(key, kernel_min)
            delays.append((max(0.0, rtt - floor), moved))
            floors.append((floor, moved))
        return delays, floors


def weighted_median(samples: Collection[tuple[float, float]]) -> float | None:
    """The value at which half the weight is reached: the tick's queueing delay from
    (inflation, bytes acknowledged) per socket, where a socket that moved little has an
    old smoothed RTT (the kernel updates it per ACK), so each counts by the bytes it
    moved."""
    return weighted_quantile(samples, 0.5)


def weighted_quantile(samples: Collection[tuple[float, float]], q: float) -> float | None:
    """The value at which the fraction ``q`` of the (value, weight) pairs' weight is
    reached; None for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    mark = sum(weight for _value, weight in ordered) * q
    seen = 0.0
    for value, weight in ordered:
        seen += weight
        if seen >= mark:
            return value
    return ordered[-1][0]


def receive_window(rate: float, base_rtt_s: float, flows: int, mss: int) -> int:
    """Download auto's lever: the receive window of each of ``flows`` busy sockets for
    ``rate`` bytes/s. All of them together keep the rate over the base RTT plus half
    the bloat threshold in flight: at the rate, a queue of up to that half is allowed,
    and a longer one slows the flows below it. Never below two segments each: a
    one-segment window waits on the peer's delayed-ACK timer."""
    share = rate * (base_rtt_s + AUTORATE_DELAY_THRESHOLD_S / 2) / max(flows, 1)
    return max(int(share), AUTORATE_WINDOW_MIN_SEGMENTS * mss)


def recent_rtt(previous: float, srtt: float, acks: float) -> float | None:
    """The mean RTT of the ``acks`` samples taken since ``previous``, undoing the
    kernel's smoothing (srtt += (sample - srtt) / 8 per ACK, RFC 6298), or None when
    none came in, or on the first look since the socket was idle: it keeps an old srtt,
    and 100-250 ms of it were read as queueing after a drain while the router's queue
    was empty."""
    if previous <= 0:  # the first look since the socket was idle: its srtt may be old
        return None
    kept = (7 / 8) ** acks  # the weight the old srtt still has
    if kept > AUTORATE_STALE_WEIGHT:
        return None
    return float((srtt - kept * previous) / (1 - kept))
