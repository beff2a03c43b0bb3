"""The benchmark must not rot: a tiny run produces every figure (not a performance test:
the figures themselves are not checked)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.support.scripts import REPO, run_benchmark


def test_benchmark_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_benchmark(
        "run.py",
        "--smoke",
        "--only",
        "direct,fyntr,fyntr-drr,fyntr-shaped,bare-relay",
        "--json",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == []
    sys.path.insert(0, str(REPO / "benchmarks"))
    from run import FIGURES, PLAIN_HTTP, PROXY_ONLY  # type: ignore[import-not-found]

    for workload, key, _label, _higher in FIGURES:
        figures = data["medians"][f"{workload}.{key}"]
        for name in ("fyntr", "fyntr-drr", "fyntr-shaped", "bare-relay"):
            if name == "bare-relay" and (key == "resolver_calls" or workload in PLAIN_HTTP):
                continue  # fyntr's own count, from its /status; a CONNECT-only relay
            assert figures[name] is not None, (workload, key, name)
        if key not in PROXY_ONLY:
            assert figures["direct"] is not None, (workload, key)
    assert "fyntr/best peer" in result.stdout and "machine:" in result.stdout
    # Counted (how many depends on how the tiny burst's lookups overlap; that one burst
    # makes one lookup is tests/integration/test_dns_coalescing.py's to show).
    assert data["medians"]["burst_name.resolver_calls"]["fyntr"] >= 1


def test_router_plot_without_matplotlib_is_refused_before_any_run(tmp_path: Path) -> None:
    """``--plot`` needs matplotlib (the bench extra): said at once with how to install
    it, not in a traceback after minutes of runs, and no run starts."""
    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed here: --plot would draw")
    result = run_benchmark(
        "router.py", "--scenarios", "a", "--quick", "--plot", str(tmp_path / "p.png"), timeout=60
    )
    assert result.returncode == 2
    assert "--plot needs matplotlib" in result.stderr
    assert "pip install '.[bench]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "running" not in result.stderr
