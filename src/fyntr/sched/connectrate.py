"""``--connect-rate auto``: pace new upstream connections only while the network shows
it cannot take more. Pure: every finished dial is reported with the clock.

A home router whose CPU or NAT table chokes drops SYNs; before it drops them it queues
them, so connect times inflate far past the destination's usual. The signals, per dial:
the SYN was retransmitted (``TCP_INFO``'s retransmissions on the new socket, or a dial
attempt that timed out), or the connect took more than ``CONNECT_AUTO_INFLATION`` times
the destination's fastest connect plus ``CONNECT_AUTO_SLACK_S``.

* On such a dial the rate halves (from what was completing in the last second, when
  unpaced), at most once per ``CONNECT_AUTO_HOLD_S``: multiplicative decrease.
* Each healthy dial that waited for its token raises the rate by ``CONNECT_AUTO_RAISE``
  (the rate doubles every 14 of them), and pacing ends once the rate passes
  ``CONNECT_AUTO_UNPACED_RATE``: healthy connects are not paced at all.
* A fresh start knows nothing of the router yet: it paces a cold burst at
  ``CONNECT_AUTO_INITIAL_RATE`` after ``CONNECT_AUTO_BURST`` at once, until healthy
  connects have shown it more (half a second, once, for a burst of 200 on loopback).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from fyntr.limits import (
    CONNECT_AUTO_BASELINES,
    CONNECT_AUTO_HOLD_S,
    CONNECT_AUTO_INFLATION,
    CONNECT_AUTO_INITIAL_RATE,
    CONNECT_AUTO_MIN_RATE,
    CONNECT_AUTO_RAISE,
    CONNECT_AUTO_SLACK_S,
    CONNECT_AUTO_UNPACED_RATE,
)


class ConnectRate:
    __slots__ = ("_baselines", "_cut_at", "_recent", "losses", "rate", "slow")

    def __init__(self) -> None:
        self.rate: float | None = CONNECT_AUTO_INITIAL_RATE  # dials/s; None: unpaced
        self.losses = 0  # dials whose SYN was lost
        self.slow = 0  # dials that took far longer than the destination's usual
        self._baselines: dict[Hashable, float] = {}  # destination -> fastest connect, s
        self._recent: deque[float] = deque()  # when dials finished, the last second
        self._cut_at = float("-inf")

    def observe(
        self,
        now: float,
        destination: Hashable,
        connect_s: float | None,
        *,
        syn_lost: bool,
        paced: bool,
    ) -> float | None:
        """A dial finished: ``connect_s`` None when it failed; ``paced``: it waited for
        a token, so its health speaks for the rate (a dial of the burst allowance says
        nothing of it). Returns the rate."""
        recent = self._recent
        recent.append(now)
        while recent[0] < now - 1.0:
            recent.popleft()
        inflated = False
        if connect_s is not None:
            base = self._baselines.get(destination)
            if base is None or connect_s < base:
                if len(self._baselines) >= CONNECT_AUTO_BASELINES:
                    self._baselines.clear()  # bounded: relearn, one dial per destination
                self._baselines[destination] = connect_s
            elif connect_s > CONNECT_AUTO_INFLATION * base + CONNECT_AUTO_SLACK_S:
                inflated = True
        if syn_lost or inflated:
            self.losses += syn_lost
            self.slow += inflated
            if now - self._cut_at >= CONNECT_AUTO_HOLD_S:
                self._cut_at = now
                current = len(recent) if self.rate is None else self.rate
                self.rate = max(CONNECT_AUTO_MIN_RATE, current / 2)
        elif connect_s is not None and self.rate is not None and paced:
            self.rate *= CONNECT_AUTO_RAISE
            if self.rate >= CONNECT_AUTO_UNPACED_RATE:
                self.rate = None
        return self.rate
