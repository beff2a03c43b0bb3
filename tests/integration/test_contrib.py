"""The service files in contrib/: systemd's own checker accepts the user unit (with
ExecStart pointing at this fyntr), and the launchd agent is a valid property list that
runs fyntr at load and restarts it only after a failure."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verifies_the_user_unit(tmp_path: Path) -> None:
    installed = Path(sys.executable).parent / "fyntr"
    assert installed.exists(), "fyntr is installed into the test environment"
    unit = (REPO / "contrib" / "systemd" / "fyntr.service").read_text()
    assert "ExecStart=%h/.local/bin/fyntr" in unit
    assert "Restart=on-failure" in unit and "EnvironmentFile=-%h/.config/fyntr/env" in unit
    copy = tmp_path / "fyntr.service"
    copy.write_text(unit.replace("%h/.local/bin/fyntr", str(installed)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out


def test_the_launchd_agent_runs_fyntr_and_restarts_it_on_failure() -> None:
    with (REPO / "contrib" / "launchd" / "io.fyntr.proxy.plist").open("rb") as f:
        agent = plistlib.load(f)
    assert agent["Label"] == "io.fyntr.proxy"
    assert agent["ProgramArguments"][0].endswith("/fyntr")
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert all(key.startswith("FYNTR_") for key in agent["EnvironmentVariables"])
