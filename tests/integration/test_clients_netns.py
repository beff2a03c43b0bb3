"""Bound beyond loopback, fyntr serves only the client ranges: by default the addresses a
home or office network hands out, so a client from 198.18.0.1 (the benchmarking range,
none of them) is refused until ``--client-allow`` names it. Two network namespaces this
test makes and removes, joined by a veth pair; fyntr listens on 198.18.0.2 in one, curl
connects from the other."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

from tests.support.net import fyntr_argv
from tests.support.netns import needs_netns

SUFFIX = str(os.getpid())
CLIENT_NS, SERVER_NS = f"fyntr-cac-{SUFFIX}", f"fyntr-cas-{SUFFIX}"
CLIENT_IF, SERVER_IF = f"cc{SUFFIX}"[:15], f"cs{SUFFIX}"[:15]
SERVER_IP = "198.18.0.2"
PROXY_PORT, ORIGIN_PORT = 9999, 8080

pytestmark = needs_netns("curl")

ORIGIN = (
    "import http.server as h; "
    f"h.ThreadingHTTPServer(('{SERVER_IP}', {ORIGIN_PORT}), h.SimpleHTTPRequestHandler)"
    ".serve_forever()"
)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextlib.contextmanager
def network() -> Iterator[None]:
    try:
        sh("ip", "netns", "add", CLIENT_NS)
        sh("ip", "netns", "add", SERVER_NS)
        sh("ip", "link", "add", CLIENT_IF, "netns", CLIENT_NS, "type", "veth", "peer", "name",
           SERVER_IF, "netns", SERVER_NS)  # fmt: skip
        addresses = (
            (CLIENT_NS, CLIENT_IF, "198.18.0.1/24"),
            (SERVER_NS, SERVER_IF, f"{SERVER_IP}/24"),
        )
        for ns, dev, ip in addresses:
            sh("ip", "-n", ns, "addr", "add", ip, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (CLIENT_NS, SERVER_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@contextlib.contextmanager
def started(*command: str) -> Iterator[list[str]]:
    """``command`` in the server namespace; what it printed, once it is over."""
    printed: list[str] = []
    proc = subprocess.Popen(
        ["ip", "netns", "exec", SERVER_NS, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield printed
    finally:
        proc.terminate()
        printed.append(proc.communicate(timeout=10)[0].decode())


def curl() -> subprocess.CompletedProcess[str]:
    """A CONNECT from the client namespace to the origin, through fyntr; curl's output
    and the proxy's answer (-v) on failure."""
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(
            ["ip", "netns", "exec", CLIENT_NS, "curl", "-sS", "-p", "--max-time", "5", "-x",
             f"http://{SERVER_IP}:{PROXY_PORT}", f"http://{SERVER_IP}:{ORIGIN_PORT}/"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 7 or time.monotonic() > deadline:  # 7: cannot connect
            return out
        time.sleep(0.1)  # fyntr still starting


def fyntr(*extra: str) -> list[str]:
    return fyntr_argv(
        "--bind", SERVER_IP, "--port", str(PROXY_PORT), "--allow-cidr", "198.18.0.0/15",
        "--allow-port", str(ORIGIN_PORT), *extra,
    )  # fmt: skip


def test_default_ranges_refuse_a_client_outside_them_and_client_allow_admits_it() -> None:
    with network(), started(sys.executable, "-c", ORIGIN):
        with started(*fyntr()) as printed:
            refused = curl()
        log = "".join(printed)
        assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
        assert "any device in 127.0.0.0/8, ::1/128, 10.0.0.0/8" in log  # the start-up warning
        assert "198.18.0.1" in log and "may not use this proxy" in log
        with started(*fyntr("--client-allow", "198.18.0.0/15")):
            served = curl()
        assert served.returncode == 0, served.stderr
        assert "Directory listing" in served.stdout
