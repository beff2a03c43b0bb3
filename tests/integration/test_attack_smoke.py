"""The attack run (benchmarks/attack.py), small: the holes it found stay closed. Each
case asserts what it names (a slot freed at once after a half-closed bad request, no
private target reachable, no traceback under fuzzing, byte-exact half-closes, resets
passed on as resets, no plain HTTP client's request or origin bytes reaching another
client, pipelined requests all answered, memory given back once a load is over); the run
exits 1 when one fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.scripts import run_benchmark


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_attack_run_small_finds_no_hole(tmp_path: Path) -> None:
    out = tmp_path / "attack.json"
    result = run_benchmark(
        "attack.py",
        "--scale",
        "0.05",
        "--soak-s",
        "10",
        "--json",
        str(out),
        timeout=280,
    )
    results = json.loads(out.read_text())
    failed = {name: r for name, r in results.items() if not r["ok"]}
    assert result.returncode == 0 and not failed, (failed, result.stderr[-2000:])
    assert set(results) == {
        "linger",
        "ssrf",
        "fuzz",
        "halfclose",
        "resets",
        "smuggle",
        "pool",
        "pipeline",
        "soak",
    }
