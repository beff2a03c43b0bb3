"""Undoing the kernel's RTT smoothing (net/autorate.recent_rtt): the mean of the samples
since the last look, from the smoothed RTT before and after and the ACKs between."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyntr.sched.measure import recent_rtt


def smoothed(previous: float, samples: list[float]) -> float:
    """What the kernel's srtt becomes (RFC 6298: srtt += (sample - srtt) / 8)."""
    srtt = previous
    for sample in samples:
        srtt += (sample - srtt) / 8
    return srtt


@given(
    previous=st.floats(min_value=0.001, max_value=1.0),
    sample=st.floats(min_value=0.0001, max_value=1.0),
    acks=st.integers(min_value=1, max_value=200),
)
def test_the_samples_since_the_last_look_come_back(
    previous: float, sample: float, acks: int
) -> None:
    srtt = smoothed(previous, [sample] * acks)
    got = recent_rtt(previous, srtt, acks)
    assert got == pytest.approx(sample, rel=1e-6, abs=1e-9)


def test_an_old_srtt_is_not_read_as_the_queue() -> None:
    """After a drain the socket's srtt still says 300 ms; two fresh 1 ms samples move it
    only to 230 ms, and the reading is theirs, not 230 ms of phantom queue. A socket
    with no ACK since, or looked at for the first time since it was idle, gives none."""
    srtt = smoothed(0.3, [0.001, 0.001])
    assert srtt > 0.2
    assert recent_rtt(0.3, srtt, 2) == pytest.approx(0.001, abs=1e-9)
    assert recent_rtt(0.3, 0.3, 0) is None  # no ACK: nothing new
    assert recent_rtt(0.0, srtt, 50) is None  # first look since the socket was idle
