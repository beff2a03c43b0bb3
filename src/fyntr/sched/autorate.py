"""``--upload-rate auto``: the aggregate rate that keeps the uplink's queue short. Pure.

Fed once per tick (``AUTORATE_TICK_S``) by net/watch/autorate.py with what fyntr's own upstream
sockets saw: the queueing delay (the recent RTT above each socket's own floor; the
median over the sockets that carried data in the tick, weighted by the bytes each
moved, so one slow destination does not throttle every flow) and the achieved rate
(bytes the origins acknowledged). The law follows cake-autorate
(lynxthecat/cake-autorate) and sqm-autorate:

* no shaping while no inflation is seen: fyntr costs nothing where nothing needs taming;
* bloat is a delay above ``AUTORATE_DELAY_THRESHOLD_S`` in 2 of the last 3 ticks that
  carried data (a single spike is not bloat, and a silent link gives no samples, so a
  quiet LTE link is never taken for a bloated one), and at least
  ``AUTORATE_MIN_LOAD_BYTES_S`` of upload (less cannot be what fills the queue);
* bloat first seen while unshaped: what the flows had already written beyond fyntr
  keeps the link's queue full until it is sent, whatever rate fyntr sets, so new data is
  held at the floor until the queue drains (``DRAINING``), then shaped at a mild cut
  (``AUTORATE_CUT_MILD``) of the rate the link achieved; what the start released above
  the link before its shortfall showed is drained the same way, for as long as the link
  takes to send it;
* bloat while shaping: the rate is cut to a fraction of what the link delivers, read as
  the median of the last ticks' deliveries (``AUTORATE_LATELY_TICKS``: it follows a
  link that stepped down within those ticks, where the smoothed rate lagged for a
  second), the deeper the bloat the deeper the cut (``AUTORATE_CUT_MILD`` at the
  threshold, ``AUTORATE_CUT_DEEP`` at four times it), then held until the queue seen
  has drained; a further cut waits until the flows run at the rate. The cut goes below
  half the current rate at once, and the ceiling recovery aims at becomes what the
  link delivers, only when that is well below the rate (``AUTORATE_LINK_BELOW``: the
  link's own rate then);
* while the delay is low and the rate is nearly used, the rate rises: by
  ``AUTORATE_RECOVER`` per tick while well below the highest rate achieved since the
  last cut, by ``AUTORATE_RAISE`` nearer, and by ``AUTORATE_PROBE`` once near it,
  probing for a link that got faster without overshooting far; the probe's step doubles
  every ``AUTORATE_PROBE_ACCEL_TICKS`` calm ticks in which the link carried more than
  it had since the last cut (or per round trip, when one is longer), and more in all
  than a token bucket's burst seen on the same link before (what the last probe there
  carried above the link's rate before its queue showed), so that an uplink
  that stepped up (LTE moves by itself every few seconds) is found within its step, and
  a full one is not overshot by more than a few steps. A calm tick without that, or in
  which fyntr holds data back but the acknowledgements lag the rate just raised, pauses
  the doubling without restarting it;
* the rate never goes below ``AUTORATE_FLOOR_BYTES_S``, and rises only while the flows use
  it (so never far above the highest rate achieved); after ``AUTORATE_RELEASE_S``
  without bloat while the rate does not bind, shaping stops.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from enum import Enum

from fyntr.limits import (
    AUTORATE_BLOAT_TICKS,
    AUTORATE_CUT_DEEP,
    AUTORATE_CUT_MILD,
    AUTORATE_DELAY_THRESHOLD_S,
    AUTORATE_DRAIN_MAX_S,
    AUTORATE_FLOOR_BYTES_S,
    AUTORATE_HIGH_LOAD,
    AUTORATE_HISTORY,
    AUTORATE_IN_CONTROL,
    AUTORATE_LATELY_TICKS,
    AUTORATE_LINK_BELOW,
    AUTORATE_MIN_LOAD_BYTES_S,
    AUTORATE_PLATEAU,
    AUTORATE_PROBE,
    AUTORATE_PROBE_ACCEL_TICKS,
    AUTORATE_PROBE_SAME_LINK,
    AUTORATE_RAISE,
    AUTORATE_RECOVER,
    AUTORATE_RECOVER_BELOW,
    AUTORATE_REFRACTORY_S,
    AUTORATE_RELEASE_S,
    AUTORATE_SMOOTHING,
    AUTORATE_START_BYTES_S,
    AUTORATE_START_DELIVERED,
    AUTORATE_START_GROWTH_MAX,
    AUTORATE_START_HISTORY,
    AUTORATE_START_LOOSE_TICKS,
    AUTORATE_START_RELEASE_BYTES_S,
    AUTORATE_TICK_S,
    AUTORATE_WINDOW_TICKS,
)


class Phase(Enum):
    UNSHAPED = "unshaped"  # no rate in force
    STARTING = "starting"  # a burst's first seconds: the rate doubles while calm
    DRAINING = "draining"  # bloat first seen, or the start's overshoot: held at the floor
    # until the queue is gone
    HOLDING = "holding"  # cut on bloat, waiting for the cut to show
    SHAPING = "shaping"  # a rate in force, adjusted every tick


def _mean_over(released: deque[tuple[float, float]], end: float) -> float:
    """The mean rate released over the tick that ended at ``end``, from (tick's end,
    rate during it) pairs; before the first, the first's rate."""
    start = end - AUTORATE_TICK_S
    total = covered = 0.0
    for t, rate in released:
        overlap = min(t, end) - max(t - AUTORATE_TICK_S, start)
        if overlap > 0:
            total += rate * overlap
            covered += overlap
    return total / covered if covered > 0 else released[0][1]


@dataclass(frozen=True, slots=True)
class Point:
    """One tick of history: for /status and ``fyntr top``."""

    at: float
    rate: float | None
    achieved: float
    delay_s: float | None


class RateController:
    __slots__ = (
        "_active_since",
        "_backlogged_since",
        "_base_rtt",
        "_burst",
        "_calm_ticks",
        "_drained",
        "_growth",
        "_hold_until",
        "_lately",
        "_loose_limit",
        "_loose_ticks",
        "_probed",
        "_probed_from",
        "_recent",
        "_released",
        "_start_rtt",
        "_surplus",
        "_target",
        "achieved",
        "ceiling",
        "delay_s",
        "history",
        "phase",
        "rate",
    )

    def __init__(self, now: float) -> None:
        self.rate: float | None = None  # bytes/s in force; None: unlimited
        self.phase = Phase.UNSHAPED
        self.achieved = 0.0  # bytes/s acknowledged, smoothed over a few ticks
        self.ceiling = 0.0  # the highest smoothed rate achieved since the last cut
        self.delay_s: float | None = None  # the last tick's queueing delay
        self._recent: deque[bool] = deque(maxlen=AUTORATE_WINDOW_TICKS)  # bloated ticks
        self._lately: deque[float] = deque(maxlen=AUTORATE_LATELY_TICKS)  # delivered
        # No cut before; in DRAINING, the end of the drain, or for the start's overshoot
        # its beginning (its length follows the link's rate as the drain measures it).
        self._hold_until = now
        self._target = 0.0  # the rate to shape at once DRAINING is over
        # A drain of the start's overshoot: the found rate, then what the link delivered
        # each tick of it (the FIFO is not empty then, so no token bucket's burst
        # flatters it); None: a drain of bloat seen unshaped.
        self._drained: list[float] | None = None
        self._active_since = now  # the last bloat, or tick where the rate bound
        self._calm_ticks = 0  # probing upwards without bloat: ticks the link carried more
        self._base_rtt = 0.0  # the base RTT the last tick was given
        self._surplus = 0.0  # bytes the link carried above the ceiling while probing above it
        self._burst = 0.0  # a token bucket's: what the last probe on the same link carried
        # above the link's rate before its queue showed
        self._probed_from = 0.0  # the ceiling when the probe went above it
        # The probe's deliveries while above the ceiling; empty: not probing above it.
        self._probed: deque[float] = deque(maxlen=AUTORATE_START_HISTORY)
        self._growth = 2.0  # STARTING: the rate's factor per tick while calm
        self._loose_ticks = 0  # STARTING: ticks in a row in which the rate did not bind
        self._loose_limit = AUTORATE_START_LOOSE_TICKS  # STARTING: that many let go
        self._start_rtt = 0.0  # STARTING: the round trip of the burst's first connection
        self._backlogged_since: float | None = None  # STARTING: the tick fyntr began to hold
        self._released: deque[tuple[float, float]] = deque(maxlen=AUTORATE_START_HISTORY)
        self.history: deque[Point] = deque(maxlen=AUTORATE_HISTORY)

    def start(self, now: float, rtt_s: float) -> float | None:
        """A new upstream connection across a router while nothing is shaped: the first
        bytes of a burst are what fills a slow link's queue before any RTT has grown (40
        flows' first windows and socket buffers were 10 s of a 1 Mbit/s uplink). So the
        aggregate starts at ``AUTORATE_START_BYTES_S`` and, like one TCP flow in slow
        start, doubles per round trip (``rtt_s``, at most x2 a tick) for as long as the
        link delivers what was released a round trip before (the bytes acknowledged: on a
        slow link with many flows, RTT samples are seconds apart, acknowledgements are
        not). A shortfall while fyntr holds data back, and did a round trip before (the
        flows want more than the rate), is the link's rate at once: shape just below it;
        with nothing held back, one with no calm round trips to explain it after a few
        ticks is too. A queue that shows with a shortfall does the same; jitter without
        one does not. A rate the flows leave unused while the round trips stay calm, or
        ``AUTORATE_START_RELEASE_BYTES_S``, lets go. Returns
        the rate to put in force."""
        if self.phase is Phase.UNSHAPED:
            self.phase = Phase.STARTING
            self.rate = AUTORATE_START_BYTES_S
            self._start_rtt = rtt_s
            self._growth = min(AUTORATE_START_GROWTH_MAX, 2 ** (AUTORATE_TICK_S / max(rtt_s, 1e-3)))
            self._released.clear()
            # Bloat seen before a quiet spell is not this burst's (quiet ticks bring no
            # delay to push it out): it cut a burst after shaping stopped on its first tick.
            self._recent.clear()
            self._backlogged_since = None
            self._loose_ticks = 0
            # A link slower than the rate shows it only a round trip later (the queue's
            # delay), and meanwhile leaves the rate unused as flows that want less do.
            self._loose_limit = AUTORATE_START_LOOSE_TICKS + math.ceil(2 * rtt_s / AUTORATE_TICK_S)
            self._active_since = now
        return self.rate

    def update(
        self,
        now: float,
        delay_s: float | None,
        achieved: float,
        base_rtt_s: float = 0.0,
        *,
        backlogged: bool = False,
    ) -> float | None:
        """One tick: the delay (None when no socket carried data), the achieved rate in
        bytes/s, the base RTT of the sockets that carried data (0: not known), and whether
        fyntr holds data back at the rate (the flows want more than it). Returns the rate
        to put in force (None: unlimited)."""
        self._base_rtt = base_rtt_s
        if achieved < AUTORATE_MIN_LOAD_BYTES_S:
            # Too little upload to be what fills a queue: a probe's or an API call's
            # bytes beside a download burst see the downlink's queue in their round
            # trips (router benchmark (d)), and shaping the upload would not shorten it.
            delay_s = None
        self.delay_s = delay_s
        # ACKs come in bursts (one tick saw 4.5 MB/s on a 2.5 MB/s link): smooth them;
        # but a cut is of what the link carries now, which a rising average lags.
        self.achieved += AUTORATE_SMOOTHING * (achieved - self.achieved)
        delivered = achieved
        self._lately.append(delivered)
        carried, achieved = max(achieved, self.achieved), self.achieved
        # The link carried more than ever since the last cut, and, probing above that,
        # more in all than the last probe on the same link did before its queue showed: a
        # token bucket in front of the FIFO passes its burst whenever the rate passes the
        # link after a drain (32 KB in the router benchmark: 26 ms of cable's link), the
        # deliveries follow the rate until it is spent, and the step doubled on them to
        # 20% (the rate 1.35x the link every 1.6 s on cable; a queue p95 of 125 ms).
        if self.phase is Phase.SHAPING and self.rate is not None and self.rate > self.ceiling:
            if not self._probed:
                self._probed_from = self.ceiling
            self._surplus += max(0.0, delivered - self.ceiling) * AUTORATE_TICK_S
            self._probed.append(delivered)
        elif self._probed:
            self._surplus = 0.0
            self._probed.clear()
        more = delivered > self.ceiling and self._surplus > self._burst
        self.ceiling = max(self.ceiling, achieved)
        if delay_s is not None:
            self._recent.append(delay_s > AUTORATE_DELAY_THRESHOLD_S)
        bloated = delay_s is not None and sum(self._recent) >= AUTORATE_BLOAT_TICKS
        if bloated:
            self._active_since = now
        phase = self.phase
        if phase is Phase.UNSHAPED:
            if bloated:
                self._drain(now, carried)
        elif phase is Phase.STARTING:
            self._starting(now, delay_s, carried, delivered, bloated=bloated, backlogged=backlogged)
        elif phase is Phase.DRAINING:
            assert self.rate is not None
            calm = delay_s is not None and delay_s < AUTORATE_DELAY_THRESHOLD_S
            drained = achieved <= AUTORATE_IN_CONTROL * self.rate  # only the floor flows
            timed = self._drained
            if timed is not None:
                # The start's overshoot: its queue shows in the round trips only once it
                # has drained, so the drain lasts what the queue holds at the link's rate:
                # the median of the rate found and what each earlier tick of the drain
                # delivered (a token bucket's burst flattered the rate the start found:
                # 1.3 Mbit/s on a 1 Mbit/s DSL line). Not this tick's: the queue may have
                # run out in it (fibre's 50 ms FIFO: 37 of 100 Mbit/s).
                emptied = delivered <= AUTORATE_IN_CONTROL * self.rate  # only the floor came
                link = statistics.median(timed)
                timed.append(delivered)
                if emptied or now >= self._hold_until + self._drain_s(link):
                    self.rate = max(AUTORATE_FLOOR_BYTES_S, link * AUTORATE_CUT_MILD)
                    self._drained = None
                    self.phase = Phase.HOLDING
                    # Packets sent during the drain still come back with its queue.
                    self._hold_until = now + AUTORATE_REFRACTORY_S + self._start_rtt
                    self._recent.clear()
            elif calm or drained or now >= self._hold_until:
                # Drained, or the queue is not only ours (other traffic shares the link):
                # shape at the target either way; a queue that stays is cut for as usual.
                self.rate = self._target
                self.phase = Phase.HOLDING
                self._hold_until = now + AUTORATE_REFRACTORY_S
        elif bloated:
            # Cut again only once the flows run at the rate: bytes that had passed the
            # shaper before it drain at the link's speed, and are no reason to cut again.
            # Judged on the last ticks' deliveries: after LTE's step from 40 to 10 Mbit/s
            # the smoothed rate read 31 for 0.3 s and cut to 25, then 12.6, then 6.3,
            # 1.2 s apart, while the FIFO stayed full.
            assert self.rate is not None
            lately = statistics.median(self._lately)
            if now >= self._hold_until and lately <= AUTORATE_IN_CONTROL * self.rate:
                self._cut(now, delay_s, lately, steady=True)  # type: ignore[arg-type]
        else:
            self._adjust(now, delay_s, carried, backlogged=backlogged, more=more)
        self.history.append(Point(now, self.rate, achieved, delay_s))
        return self.rate

    def _starting(
        self,
        now: float,
        delay_s: float | None,
        carried: float,
        delivered: float,
        *,
        bloated: bool,
        backlogged: bool,
    ) -> None:
        assert self.rate is not None
        # (tick's end, the rate in force during it): what is acknowledged in this tick
        # was sent in the tick's span a round trip earlier, at the rates of the ticks
        # that span overlaps, in proportion.
        released = self._released
        released.append((now, self.rate))
        if not backlogged:
            self._backlogged_since = None
        elif self._backlogged_since is None:
            self._backlogged_since = now
        if now - released[0][0] < self._start_rtt:
            return  # nothing released has been acknowledged yet: nothing to judge
        then = _mean_over(released, now - self._start_rtt)
        # A queue beginning needs a shortfall: any one with a delay at the threshold, the
        # one growth is judged by under it, where the delay is of jitter's size (LTE's
        # start read 14 ms on one socket while the link delivered 0.95 of what was
        # released, and took 0.7 Mbit/s for 5).
        queued = delay_s is not None and delay_s >= AUTORATE_DELAY_THRESHOLD_S
        short = then if queued else AUTORATE_START_DELIVERED * then
        if bloated:
            self._cut(now, delay_s, carried)  # type: ignore[arg-type]
        elif (
            delay_s is not None and delay_s >= AUTORATE_DELAY_THRESHOLD_S / 2 and delivered < short
        ):
            # A queue begins, and the link delivers less than was released this tick: LTE's
            # jitter alone put 11 ms on one socket's round trips while it delivered all.
            self._link_found(now, carried)
        elif carried >= AUTORATE_START_DELIVERED * then:
            self._loose_ticks = 0
            self.rate *= self._growth
            if self.rate >= AUTORATE_START_RELEASE_BYTES_S:
                self.rate, self.phase = None, Phase.UNSHAPED
        elif (
            self._backlogged_since is not None
            and now - self._backlogged_since >= self._start_rtt + AUTORATE_TICK_S
            and carried >= AUTORATE_MIN_LOAD_BYTES_S
        ):
            # Less delivered than released while fyntr holds data back (and did so
            # a round trip before, when what is acknowledged now was released: flows
            # that began to send in the tick judged leave its rate unused, and were
            # taken for a 1 Mbit/s link on LTE): the flows want more than the rate, so
            # the shortfall is the link's. Waiting for a queue to
            # show let a 1 Mbit/s link take 4 Mbit/s for 4 ticks (its token bucket's burst
            # flattered the first ticks, and 40 flows give an RTT sample every few):
            # the router's FIFO held 1.2 s (router benchmark, DSL profile).
            self._link_found(now, carried)
        elif carried >= AUTORATE_MIN_LOAD_BYTES_S:
            # Less delivered than released with nothing held back: the flows want less
            # than the rate, or the link carries less and its queue has yet to show. A
            # round trip and a few ticks tell: by then a queue shows (above), or calm
            # round trips say the flows want less, or nothing says why: the link's.
            self._loose_ticks += 1
            if self._loose_ticks >= self._loose_limit:
                if delay_s is not None:
                    self.rate, self.phase = None, Phase.UNSHAPED
                else:
                    self._link_found(now, carried)
        # else: too little upload to judge (a probe's bytes before the burst): wait

    def _link_found(self, now: float, carried: float) -> None:
        """The link is full at what it carries now, and what grew in the round trip the
        signal took is still on its way: shape a little below it (the queue drains),
        probing above it as usual afterwards."""
        assert self.rate is not None
        self.ceiling = carried
        # What was released above the link's rate before the shortfall showed is in its
        # queue now (LTE profile: 16 Mbit/s released on a 5 Mbit/s step, 240 ms of FIFO):
        # hold it back until the link has sent that, then shape below its rate.
        if self._overshoot(carried) > carried * AUTORATE_DELAY_THRESHOLD_S:
            self.rate = AUTORATE_FLOOR_BYTES_S
            self.phase = Phase.DRAINING
            self._drained = [carried]
            self._hold_until = now  # the drain's start; its length, _drain_s
            return
        self.rate = max(AUTORATE_FLOOR_BYTES_S, min(self.rate, carried) * AUTORATE_CUT_MILD)
        self.phase = Phase.HOLDING
        # What the last round trip released above the link's rate still reaches its
        # queue: no cut for that (satellite profile: cut to half the link without this).
        self._hold_until = now + AUTORATE_REFRACTORY_S + self._start_rtt

    def _overshoot(self, link: float) -> float:
        """Bytes the start released above ``link`` (the rate only grows while starting:
        what exceeds it is the last ticks')."""
        return sum(max(0.0, rate - link) for _t, rate in self._released) * AUTORATE_TICK_S

    def _drain_s(self, link: float) -> float:
        """How long the start's overshoot takes to drain at ``link`` while the floor
        still flows (a quarter of a 1 Mbit/s link), at most a drain."""
        drains = max(link - AUTORATE_FLOOR_BYTES_S, 1.0)
        return min(self._overshoot(link) / drains, AUTORATE_DRAIN_MAX_S)

    @staticmethod
    def _factor(delay_s: float) -> float:
        """The deeper the bloat, the deeper the cut."""
        excess = (delay_s - AUTORATE_DELAY_THRESHOLD_S) / (3 * AUTORATE_DELAY_THRESHOLD_S)
        depth = min(1.0, max(0.0, excess))  # this tick may be below: 2 of 3 made it bloat
        return AUTORATE_CUT_MILD - (AUTORATE_CUT_MILD - AUTORATE_CUT_DEEP) * depth

    def _drain(self, now: float, achieved: float) -> None:
        """Bloat seen while unshaped: what the flows had written beyond fyntr (socket
        and transport buffers, the router's queue) keeps the link's queue full for as
        long as it takes to send at the link's speed, whatever rate fyntr sets, so hold
        the rest back (the floor) until it is gone, then shape at a cut of the rate the
        link achieved (a mild one: the drain, not the rate, empties the queue). Shaping
        at a cut at once took 3.7 s to drain 3.7 MB in the router benchmark, against
        1.5 s this way."""
        self._target = max(AUTORATE_FLOOR_BYTES_S, achieved * AUTORATE_CUT_MILD)
        self.rate = AUTORATE_FLOOR_BYTES_S
        self.phase = Phase.DRAINING
        self._hold_until = now + AUTORATE_DRAIN_MAX_S

    def _cut(self, now: float, delay_s: float, achieved: float, *, steady: bool = False) -> None:
        """``steady``: ``achieved`` is the median of the last ticks' deliveries, not one
        tick's, so a link it reads well below the rate is cut to at once."""
        assert self.rate is not None
        factor = self._factor(delay_s)
        below = achieved < AUTORATE_LINK_BELOW * self.rate
        if below:
            # Held below the rate: the link carries what the flows achieve, and fast
            # recovery aims at that, not at what a link that has since slowed once did.
            self.ceiling = achieved
        else:
            # At the rate, or above it while what passed before drains: the link carries
            # at least that. A cut on a queue still draining must not set the ceiling to
            # fyntr's own throttle (DSL profile: 60% of the link used with it, 64% without).
            self.ceiling = max(self.ceiling, achieved)
        new = min(self.rate, achieved) * factor
        if not (steady and below):
            # Never below half at once on one tick's word: a short spike must not
            # collapse the rate. Read over a few ticks, a link well below the rate (it
            # stepped down, or other traffic took its share) is cut below at once.
            new = max(new, self.rate / 2)
        self.rate = max(AUTORATE_FLOOR_BYTES_S, new)
        self.phase = Phase.HOLDING
        self._calm_ticks = 0
        if self._probed:
            # The same link found again: what the probe's ticks carried above its rate
            # now was a token bucket's burst; what they carried between the old ceiling
            # and that was room. A link that stepped up or down since: no burst known.
            # Either taken for a burst held LTE's next climb at 2.5% a tick for 1.4 s.
            ratio = achieved / max(self._probed_from, 1.0)
            steady = 1 / AUTORATE_PROBE_SAME_LINK <= ratio <= AUTORATE_PROBE_SAME_LINK
            probed = list(self._probed)[:-1]  # this tick's is the link's, seen with the queue
            burst = sum(max(0.0, d - achieved) for d in probed) * AUTORATE_TICK_S
            self._burst = burst if steady else 0.0
            self._surplus = 0.0
            self._probed.clear()
        # Hold until the queue that was seen has drained at the rate given up (a queue of
        # d seconds of the link drains in d / (1 - factor)), so that the same queue is
        # not cut for twice while it drains.
        # The delay seen is a round trip old: the drain shows that much later too.
        self._hold_until = now + max(AUTORATE_REFRACTORY_S, delay_s / (1 - factor)) + self._base_rtt
        self._recent.clear()

    def _adjust(
        self, now: float, delay_s: float | None, carried: float, *, backlogged: bool, more: bool
    ) -> None:
        """``carried``: the larger of the tick's deliveries and their smoothed value. The
        smoothed value alone lags a rate just raised by a quarter, so every other tick of
        a climb read as unused and did not rise; with the probe's gate (below) that made
        the router benchmark's LTE slower (makespan median 1.71x against 1.50x over 5
        runs each). Simulated LTE steps: 83.3% used and a queue p95 of 220 ms this way,
        84.9% and 260 ms on the smoothed value, 81.6% and 220 ms without the gate."""
        assert self.rate is not None
        if now < self._hold_until:
            return
        self.phase = Phase.SHAPING
        used = carried >= AUTORATE_HIGH_LOAD * self.rate
        # Held back, the flows want more than the rate, whatever the acknowledgements
        # say yet: after a raise of a quarter they lag the rate for a tick or two, and
        # restarting the probe's doubling on each such tick took LTE 2 s instead of 1
        # to climb from 5 to 20 Mbit/s (router benchmark, LTE profile: 69-82% of the
        # link used in 6 runs with this alone, against 68-76% in 4 without).
        binds = used or backlogged
        # Raise only on a tick whose round trips say there is room: on a slow link with
        # many flows, most ticks bring no sample (40 flows on 1 Mbit/s get an ACK each
        # every few ticks), and raising blind overshot by 70% before the queue showed.
        calm = delay_s is not None and delay_s < AUTORATE_DELAY_THRESHOLD_S / 2
        if not (binds and calm):
            self._calm_ticks = 0
        if binds:
            self._active_since = now
            if calm and used:
                # Room left: probe for a faster link; fast while far below what the link
                # has carried, so that a deep cut costs a second, not ten.
                # Near what the link carried when it last bloated, slowly: the overshoot
                # that the next bloat is seen at stays small (sawtooth peaks of 100 ms in
                # the router benchmark's (b) at 5% a tick).
                if self.rate < AUTORATE_RECOVER_BELOW * self.ceiling:
                    self.rate *= AUTORATE_RECOVER
                elif self.rate < AUTORATE_PLATEAU * self.ceiling:
                    self.rate *= AUTORATE_RAISE
                else:
                    # Above the last ceiling and still calm: the link may be faster than
                    # it was. The probe's step doubles every AUTORATE_PROBE_ACCEL_TICKS
                    # ticks in which the link carried more than it had since the cut (2.5%,
                    # 5%, 10% ...), up to the recovery step: a link that stepped up does,
                    # a full one does not, and doubling on every calm tick took the rate
                    # to 1.5x a steady link before the queue showed a round trip later
                    # (60 simulated steady links: queue p95 119 ms, against 48 ms this way).
                    self._calm_ticks += more
                    # A round trip longer than a tick shows the overshoot later: double
                    # per round trip, then.
                    ticks = AUTORATE_PROBE_ACCEL_TICKS * max(1.0, self._base_rtt / AUTORATE_TICK_S)
                    step = (AUTORATE_PROBE - 1) * 2 ** (self._calm_ticks / ticks)
                    self.rate *= min(1 + step, AUTORATE_RECOVER)
        elif now - self._active_since >= AUTORATE_RELEASE_S:
            self.rate = None
            self.phase = Phase.UNSHAPED
