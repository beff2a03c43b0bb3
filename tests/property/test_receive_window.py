"""Download auto's window law (sched/autorate.receive_window), over links from 1 Mbit/s
to 1 Gbit/s, base RTTs from 1 to 200 ms and 1 to 200 busy flows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fyntr.limits import AUTORATE_DELAY_THRESHOLD_S, AUTORATE_WINDOW_MIN_SEGMENTS
from fyntr.sched.measure import receive_window

rates = st.floats(min_value=125_000, max_value=125_000_000)  # bytes/s
base_rtts = st.floats(min_value=0.001, max_value=0.2)
flows = st.integers(min_value=1, max_value=200)
mss = st.sampled_from([536, 1220, 1448, 1460, 8948])


@given(rates, base_rtts, flows, mss)
def test_the_windows_let_the_flows_reach_the_rate(
    rate: float, base: float, n: int, segment: int
) -> None:
    """Over the base RTT the flows' windows carry at least the rate: the clamp never
    holds a link that has no queue below the rate the controller chose."""
    window = receive_window(rate, base, n, segment)
    assert n * window / base >= rate * 0.999


@given(rates, base_rtts, flows, mss)
def test_above_the_minimum_the_queue_they_allow_is_half_the_threshold(
    rate: float, base: float, n: int, segment: int
) -> None:
    """At the rate, what the windows keep in flight beyond the base RTT queues for at
    most half the bloat threshold, unless two segments each already is more."""
    window = receive_window(rate, base, n, segment)
    queue_s = n * window / rate - base
    if window > AUTORATE_WINDOW_MIN_SEGMENTS * segment:
        assert queue_s <= AUTORATE_DELAY_THRESHOLD_S / 2 + 1e-9
    else:
        assert window == AUTORATE_WINDOW_MIN_SEGMENTS * segment
