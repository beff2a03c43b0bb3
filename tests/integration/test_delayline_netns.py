"""The router benchmark's delay line (benchmarks/delayline.py) adds the round trip it is
told and does not limit the rate: 64-byte round trips and 64 MiB transfers each way
through it, in network namespaces ``router.py --check-link`` makes and removes."""

from __future__ import annotations

import json

import pytest

from tests.support.netns import needs_netns
from tests.support.scripts import run_benchmark

pytestmark = needs_netns("tc")


def check_link(rtt_ms: float, jitter_ms: float = 0.0) -> dict[str, float]:
    args = ["--check-link", str(rtt_ms), "--jitter-ms", str(jitter_ms)]
    result = run_benchmark("router.py", *args, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_delay_line_adds_its_round_trip_and_keeps_the_order() -> None:
    held = check_link(100)
    assert 100 <= held["echo_rtt_p50_ms"] <= 105
    jittery = check_link(50, jitter_ms=15)
    assert 45 <= jittery["echo_rtt_p50_ms"] <= 58
    assert jittery["echo_rtt_p99_ms"] <= 50 + 15 + 5
    # A 64 MiB transfer arrives whole through a jittery line: nothing reordered into loss
    # that TCP could not recover from (load.py checks every byte arrived).
    assert jittery["upload_mbit_s"] > 0


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_delay_line_carries_more_than_the_fastest_profile() -> None:
    fast = check_link(2)
    assert fast["upload_mbit_s"] >= 100 and fast["download_mbit_s"] >= 100  # fibre's rate
