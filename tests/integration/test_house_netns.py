"""One fyntr for the whole house, with the real clients of a house (docs/house.md):
benchmarks/house.py --clients builds the router, the home server and three devices in
network namespaces it removes again (addresses of 198.18.0.0/15 inside them only), runs
fyntr on the home server with --auth-file and SOCKS5, and reports what each client got."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.netns import needs_netns
from tests.support.scripts import run_benchmark

pytestmark = needs_netns("tc", "curl")


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_the_clients_of_a_house_through_one_fyntr(tmp_path: Path) -> None:
    out = tmp_path / "clients.json"
    result = run_benchmark("house.py", "--clients", "--json", str(out), timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(out.read_text())
    # curl --proxy-user through CONNECT: "CONNECT status, HTTP status, bytes".
    assert got["curl_proxy_user"] == "200 200 1024"
    assert got["curl_no_credentials"].startswith("407 ")
    assert got["curl_wrong_password"].startswith("407 ")
    assert got["curl_outside_the_range"].startswith("403 ")  # device C: not in the range
    # requests, plain HTTP, credentials in the proxy URL: "status, bytes, challenge".
    assert got["requests_credentials_in_url"] == "200 1024"
    assert got["requests_no_credentials"].startswith("407 ")
    assert 'Basic realm="fyntr"' in got["requests_no_credentials"]
    assert got["socks5_user_password"] == "hello from b"  # echoed through SOCKS5
    assert got["socks5_wrong_password"].startswith("refused: ")
    # The PAC file, fetched and run as a browser does, names the address B reached.
    assert got["pac"] == "PROXY 198.18.1.10:9999"
    assert "Traceback" not in result.stderr
