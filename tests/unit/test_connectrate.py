"""--connect-rate auto's controller (sched/connectrate.py), dial by dial."""

from __future__ import annotations

import pytest

from fyntr.limits import (
    CONNECT_AUTO_HOLD_S,
    CONNECT_AUTO_INITIAL_RATE,
    CONNECT_AUTO_MIN_RATE,
    CONNECT_AUTO_RAISE,
    CONNECT_AUTO_UNPACED_RATE,
)
from fyntr.sched.connectrate import ConnectRate

HEALTHY_S = 0.010


def test_a_fresh_start_paces_and_healthy_paced_dials_raise_the_rate_until_unpaced() -> None:
    ctl = ConnectRate()
    assert ctl.rate == CONNECT_AUTO_INITIAL_RATE
    # The burst allowance's dials (not paced) say nothing of the rate.
    for n in range(20):
        ctl.observe(n * 0.001, "a", HEALTHY_S, syn_lost=False, paced=False)
    assert ctl.rate == CONNECT_AUTO_INITIAL_RATE
    ctl.observe(1.0, "a", HEALTHY_S, syn_lost=False, paced=True)
    assert ctl.rate == pytest.approx(CONNECT_AUTO_INITIAL_RATE * CONNECT_AUTO_RAISE)
    now = 1.0
    while ctl.rate is not None:
        now += 0.001
        ctl.observe(now, "a", HEALTHY_S, syn_lost=False, paced=True)
    assert now < 1.2  # 100 healthy dials or so: unpaced past CONNECT_AUTO_UNPACED_RATE


def test_a_lost_syn_halves_the_rate_once_per_hold() -> None:
    ctl = ConnectRate()
    ctl.observe(0.0, "a", 1.01, syn_lost=True, paced=True)
    assert ctl.rate == CONNECT_AUTO_INITIAL_RATE / 2
    ctl.observe(0.1, "a", 1.01, syn_lost=True, paced=True)  # the same burst's drops
    assert ctl.rate == CONNECT_AUTO_INITIAL_RATE / 2
    ctl.observe(0.1 + CONNECT_AUTO_HOLD_S, "a", 1.01, syn_lost=True, paced=True)
    assert ctl.rate == CONNECT_AUTO_INITIAL_RATE / 4
    assert ctl.losses == 3


def test_a_connect_queued_far_past_the_destinations_fastest_halves_the_rate() -> None:
    ctl = ConnectRate()
    ctl.observe(0.0, "a", 0.050, syn_lost=False, paced=False)  # a's fastest: 50 ms
    ctl.observe(0.1, "a", 0.150, syn_lost=False, paced=True)  # 3 x 50 + 30 = 180: fine
    assert ctl.rate is not None and ctl.rate > CONNECT_AUTO_INITIAL_RATE
    before = ctl.rate
    ctl.observe(0.2, "b", 0.150, syn_lost=False, paced=True)  # b's first: its baseline
    ctl.observe(0.3, "a", 0.200, syn_lost=False, paced=True)  # past 180 ms: queued
    assert ctl.rate == pytest.approx(before * CONNECT_AUTO_RAISE / 2)
    assert ctl.slow == 1


def test_unpaced_trouble_paces_at_half_what_completed_in_the_last_second() -> None:
    ctl = ConnectRate()
    ctl.rate = None  # healthy so far: unpaced
    for n in range(30):
        ctl.observe(10 + n * 0.01, "a", HEALTHY_S, syn_lost=False, paced=False)
    ctl.observe(10.5, "a", 1.01, syn_lost=True, paced=False)
    assert ctl.rate == pytest.approx(31 / 2)  # 31 dials finished in the last second


def test_the_rate_never_falls_below_the_minimum() -> None:
    ctl = ConnectRate()
    for n in range(50):
        ctl.observe(n * CONNECT_AUTO_HOLD_S, "a", None, syn_lost=True, paced=True)
    assert ctl.rate == CONNECT_AUTO_MIN_RATE
    assert CONNECT_AUTO_MIN_RATE < CONNECT_AUTO_UNPACED_RATE
