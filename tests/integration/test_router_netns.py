"""fyntr with no flags tames a bloated uplink and a bloated downlink (docs/zero-configuration.md):
benchmarks/router.py's scenarios (a) and (d) in network namespaces this test makes and
removes (a 20 Mbit/s tbf with a 300 ms FIFO, addresses of 198.18.0.0/15 inside them
only), direct and through fyntr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import needs_netns
from tests.support.scripts import run_benchmark

pytestmark = needs_netns("tc")


def scenario(key: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """One quick run of a scenario: its rows by case; fyntr's logs in ``tmp_path``."""
    out = tmp_path / "router.json"
    result = run_benchmark(
        "router.py",
        "--scenarios",
        key,
        "--quick",
        "--json",
        str(out),
        "--log-dir",
        str(tmp_path),
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {row["case"]: row for row in json.loads(out.read_text())["rows"]}


def shaped(row: dict[str, Any]) -> bool:
    """fyntr's /status showed a rate in force at some point of the burst."""
    return any(rate for _t, rate, _achieved, _delay in row["rate_history"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fyntr_with_no_flags_brings_the_probe_rtt_down_on_a_bloated_uplink(
    tmp_path: Path,
) -> None:
    rows = scenario("a", tmp_path)
    direct, fyntr = rows["direct"], rows["fyntr, no flags"]
    assert direct["probe_p50_ms"] > 50  # the uplink really bloats
    assert fyntr["probe_p50_ms"] < direct["probe_p50_ms"] / 5
    assert fyntr["failures"] == 0
    assert shaped(fyntr)
    said = (tmp_path / "fyntr-a-fyntr-no-flags.log").read_text()
    # The burst starts held back (a DEBUG line), and one line when it takes its rate.
    assert "auto upload rate: shaping at" in said
    assert "auto download rate" not in said  # an upload burst, ACKs the only download


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fyntr_with_no_flags_brings_the_probe_rtt_down_on_a_bloated_downlink(
    tmp_path: Path,
) -> None:
    """Scenario (d): 30 downloads through a 20 Mbit/s downlink with a 300 ms FIFO. The
    probe's RTT is taken over time (a probe stuck behind the queue makes fewer round
    trips, so a plain median of them understates the queue). With download auto off
    the same fyntr leaves most of the burst bloated. (Direct, the load generator's own
    sockets decide how far the downlink fills: 79 or 281 ms over time in runs of the same
    code, so auto is judged against fyntr without it.)"""
    rows = scenario("d", tmp_path)
    fyntr, off = rows["fyntr, no flags"], rows["fyntr --download-rate 0"]
    assert off["probe_time_p50_ms"] > 100  # the downlink really bloats
    # Over 7 runs of the same code: with auto 36-51 ms, without 143-215 ms (ratios 0.20 to
    # 0.35); auto not shaping gives about 1.
    assert fyntr["probe_time_p50_ms"] < off["probe_time_p50_ms"] / 2.5
    assert fyntr["failures"] == 0
    assert shaped(fyntr)
    said = (tmp_path / "fyntr-d-fyntr-no-flags.log").read_text()
    assert "auto download rate: queueing delay" in said
    assert "auto download rate: shaping at" in said
    assert "auto upload rate" not in said  # the probe's and requests' bytes: no sample


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_paced_streams_with_no_queue_are_not_taken_for_bloat(tmp_path: Path) -> None:
    """Scenario (e): three streams whose origins send one segment every 20 ms. Each
    segment echoes an ACK up to 20 ms old, so the receiver's RTT reads 20 ms above its
    floor with no queue anywhere: download auto must not shape."""
    rows = scenario("e", tmp_path)
    direct, fyntr = rows["direct"], rows["fyntr, no flags"]
    assert fyntr["failures"] == 0
    assert fyntr["shaped_s"] == 0
    assert fyntr["makespan_s"] < direct["makespan_s"] * 1.05
    assert "auto download rate" not in (tmp_path / "fyntr-e-fyntr-no-flags.log").read_text()
