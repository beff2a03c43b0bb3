"""A simulated bottleneck for the auto-rate controller: a FIFO in front of a link of
capacity C (bytes/s), fed by fyntr's flows (at the controller's rate, or, unshaped, as
fast as TCP fills the FIFO) and by other traffic that fyntr does not see. A fluid model
in ticks of AUTORATE_TICK_S; the RTT the sockets report, and the bytes acknowledged, lag
by the base RTT."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from fyntr.limits import AUTORATE_TICK_S
from fyntr.sched.autorate import RateController

UNSHAPED_OVERLOAD = 3.0  # unshaped TCP offers more than the link until its FIFO is full


@dataclass(frozen=True)
class Tick:
    at: float
    capacity: float
    rate: float | None
    achieved: float  # fyntr's flows' share of what the link carried
    queue_s: float  # the FIFO's delay


def simulate(
    capacity: Callable[[float], float],
    *,
    base_rtt_s: float,
    buffer_s: float,
    duration_s: float,
    other: Callable[[float], float] = lambda _t: 0.0,
    demand: Callable[[float], float] | None = None,
    started: bool = False,
    sample_every: int = 1,
    ack_bursts: float = 0.0,
    seed: int = 0,
    bucket: float = 0.0,
) -> list[Tick]:
    """``demand``: what fyntr's flows would send (bytes/s); default: always backlogged.
    ``started``: the burst's connections were dialled through fyntr at 0 (RateController.start
    with the base RTT as their connect time); else they were already open.
    ``sample_every``: an RTT sample only every that many ticks (40 flows on a 1 Mbit/s
    link give one every few).
    ``ack_bursts``: acknowledgements come in bursts: up to this fraction of a tick's
    carried bytes is acknowledged a tick late (random, from ``seed``), so a full link's
    deliveries read up to that much either side of its rate.
    ``bucket``: bytes a token bucket in front of the FIFO lets through above the link's
    rate after it has been idle (the router benchmark's ``tc tbf ... burst 32kb``)."""
    controller = RateController(0.0)
    rate: float | None = controller.start(0.0, base_rtt_s) if started else None
    queue = 0.0  # bytes in the FIFO
    lag = max(1, round(base_rtt_s / AUTORATE_TICK_S))
    seen: list[float] = [0.0] * lag
    # What the link carries is acknowledged a round trip later.
    acks = int(base_rtt_s / AUTORATE_TICK_S)
    lag_frac = base_rtt_s / AUTORATE_TICK_S - acks
    carried_then: list[float] = [0.0] * (acks + 1)
    ticks: list[Tick] = []
    late = random.Random(seed)
    deferred = 0.0  # bytes whose acknowledgement comes a tick late
    tokens = bucket
    for i in range(round(duration_s / AUTORATE_TICK_S)):
        now = i * AUTORATE_TICK_S
        link = capacity(now)
        want = UNSHAPED_OVERLOAD * link if demand is None else demand(now)
        mine = want if rate is None else min(rate, want)
        offered = mine + other(now)
        # The bucket's tokens carry what exceeds the link before the FIFO takes it, and
        # refill by what the link leaves unused.
        spare = (link - offered) * AUTORATE_TICK_S - queue
        burst = min(tokens, -spare) if spare < 0 else 0.0
        tokens = min(bucket, tokens - burst + max(spare, 0.0))
        queue = min(max(queue - burst + (offered - link) * AUTORATE_TICK_S, 0.0), buffer_s * link)
        carried = link + burst / AUTORATE_TICK_S if queue > 0 or burst else offered
        achieved = carried * mine / offered if offered else 0.0
        seen.append(queue / link)
        carried_then.append(achieved)
        sampled = mine > 0 and i % sample_every == 0  # no data: no sample
        delay = seen[-1 - lag] if sampled else None
        # acknowledged now: what the link carried a round trip ago, between two ticks
        acked = (1 - lag_frac) * carried_then[-1 - acks] + lag_frac * carried_then[-2 - acks]
        acked, deferred = acked - (d := late.uniform(0, ack_bursts) * acked) + deferred, d
        held = rate is not None and want > rate  # fyntr's queue holds what the flows want
        rate = controller.update(now + AUTORATE_TICK_S, delay, acked, base_rtt_s, backlogged=held)
        ticks.append(Tick(now, link, rate, achieved, queue / link))
    return ticks


def window(ticks: list[Tick], start: float, end: float = float("inf")) -> list[Tick]:
    return [t for t in ticks if start <= t.at < end]


def utilisation(ticks: list[Tick], share: float = 1.0) -> float:
    """fyntr's mean share of the link, over what was free for it."""
    return statistics.mean(t.achieved / (t.capacity * share) for t in ticks)


def median_queue_s(ticks: list[Tick]) -> float:
    return statistics.median(t.queue_s for t in ticks)
