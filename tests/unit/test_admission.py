"""Admission at the cap and connection pacing, in virtual time (no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyntr.sched.admission import Admission, FifoBucket
from fyntr.sched.drr import TokenBucket


def test_pending_and_active_share_the_cap() -> None:
    adm: Admission[str] = Admission(2)
    assert adm.try_reserve() and adm.try_reserve()
    assert not adm.try_reserve()
    adm.activate()
    assert (adm.pending, adm.active) == (1, 1)
    assert not adm.try_reserve()
    adm.release_active()
    assert adm.try_reserve()
    unlimited: Admission[str] = Admission(0)
    assert all(unlimited.try_reserve() for _ in range(10_000))


def test_a_double_release_is_caught_not_hidden() -> None:
    adm: Admission[str] = Admission(1)
    assert adm.try_reserve()
    adm.release_pending()
    with pytest.raises(AssertionError, match="released twice"):
        adm.release_pending()
    with pytest.raises(AssertionError, match="released twice"):
        adm.release_active()
    assert (adm.pending, adm.active) == (0, 0)


def test_waiting_at_the_cap_is_fifo_and_bounded() -> None:
    adm: Admission[str] = Admission(1, max_waiting=2)
    assert adm.try_reserve()
    assert adm.wait("a", deadline=10.0)
    assert adm.wait("b", deadline=11.0)
    assert not adm.wait("c", deadline=12.0)  # the queue is full: rejected at once
    adm.release_pending()
    assert not adm.try_reserve()  # a newcomer does not overtake the queue
    assert adm.admit_waiting() == ["a"]
    assert adm.pending == 1
    assert adm.expire(10.5) == []
    assert adm.expire(11.0) == ["b"]
    assert adm.admit_waiting() == []


def test_pacer_grants_at_once_when_a_token_is_there() -> None:
    pacer: FifoBucket[int] = FifoBucket(TokenBucket(10, 2, now=0.0))
    assert pacer.offer(1, now=0.0)
    assert pacer.offer(2, now=0.0)
    assert not pacer.offer(3, now=0.0)
    assert not pacer.offer(4, now=0.0)  # FIFO: nobody overtakes a waiter
    assert pacer.next_wake() == 0.1
    assert pacer.release(now=0.05) == []
    assert pacer.release(now=0.1) == [3]
    pacer.cancel(4)  # the client went away: its place is free at once
    assert pacer.next_wake() is None
    assert pacer.offer(5, now=0.2)


@given(
    st.floats(1, 200), st.integers(1, 20), st.lists(st.floats(0, 0.05), min_size=1, max_size=200)
)
def test_pacer_never_exceeds_burst_plus_rate_times_window(
    rate: float, burst: int, gaps: list[float]
) -> None:
    pacer: FifoBucket[int] = FifoBucket(TokenBucket(rate, burst, now=0.0))
    now = 0.0
    grants: list[float] = []
    for i, gap in enumerate(gaps):
        now += gap
        if pacer.offer(i, now):
            grants.append(now)
        grants.extend(now for _ in pacer.release(now))
    while pacer.waiters:
        now += pacer.next_wake() or 0.0
        grants.extend(now for _ in pacer.release(now))
    assert len(grants) == len(gaps)
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            window = grants[j] - start
            assert j - i + 1 <= burst + rate * window + 1e-6
