"""One fyntr for the whole house (docs/house.md): is each device served its share?

    sudo python benchmarks/house.py [--uplink 20mbit] [--buffer-ms 300] [--json PATH]
    sudo python benchmarks/house.py --clients [--json PATH]

The router benchmark's two namespaces (benchmarks/router.py: the router with its uplink,
a token bucket with a deep FIFO, and the origin beyond a delay line), and a LAN behind
the router: a bridge in the router's namespace, with a home server (fyntr, bound to its
LAN address, ``--client-allow`` the devices' range) and three devices, each a namespace
of its own on a veth pair. Devices A and B are in the allowed range; C is on the LAN but
outside it. Addresses come from 198.18.0.0/15 and exist only inside these namespaces,
which are removed afterwards, even on failure.

The benchmark: device B runs one bulk upload and a probe (64-byte round trips every
20 ms); 2 s later device A starts 40 bulk uploads. Reported per case (direct, fyntr with
no flags but the bind and the allow-list, and the same with ``--auth-file``, where a
client is its user): B's share of the uplink while A's burst lasts (the bytes the origin
got from B in that time over what the uplink could carry of them, GOODPUT), A's, and
B's probe during the burst. The targets (docs/house.md): B at least 45%, its probe p50 under 5 ms.

``--clients``: the real clients of a house against fyntr with ``--auth-file`` and
SOCKS5 instead: curl with ``--proxy-user`` through CONNECT, requests with the
credentials in the proxy URL (plain HTTP), python-socks with a user name and password,
a browser-like PAC fetch (pypac), and the refusals: no credentials, a wrong password,
and device C. Prints one JSON object of what each got (tests/integration/
test_house_netns.py asserts it). Needs root; without it, says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import percentile  # benchmarks/ is on sys.path when run as a script
from router import (
    CLIENT_NS,
    ORIGIN_IF,
    ORIGIN_IP,
    ORIGIN_NS,
    SUFFIX,
    Link,
    in_ns,
    network,
    sh,
    time_quantile,
)
from run import LOAD, fyntr_command, htpasswd, load

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LAN = "198.18.1.0/24"
ROUTER_LAN_IP = "198.18.1.1"
ALLOWED = "198.18.1.16/28"  # devices A and B; C is outside it
BRIDGE = f"hb{SUFFIX}"[:15]
PROXY_PORT, SOCKS_PORT, METRICS_PORT = 9999, 1080, 9100
USERS = {"a": "device-a-password", "b": "device-b-password"}  # the --auth-file case
A_FLOWS, A_SIZE = 40, 512 * 1024
B_HEAD_START_S = 2.0
PROBE_INTERVAL_S = 0.02
# What TCP's payload can have of the uplink: 1448 bytes of every full-size 1500-byte
# packet (IPv4 20, TCP 20, timestamps 12; a TUN link has no link-layer header). Direct,
# the two devices' flows together got 0.965 of the nominal rate: all of it.
GOODPUT = 1448 / 1500


@dataclass(frozen=True)
class Host:
    name: str
    ip: str

    @property
    def ns(self) -> str:
        return f"fyntr-h{self.name}-{SUFFIX}"

    @property
    def dev(self) -> str:  # in its namespace
        return f"h{self.name}{SUFFIX}"[:15]

    @property
    def port(self) -> str:  # its end on the router's bridge
        return f"r{self.name}{SUFFIX}"[:15]


SERVER = Host("s", "198.18.1.10")
DEVICE_A, DEVICE_B, DEVICE_C = (
    Host("a", "198.18.1.20"),
    Host("b", "198.18.1.21"),
    Host("c", "198.18.1.40"),
)
HOSTS = (SERVER, DEVICE_A, DEVICE_B, DEVICE_C)


@contextlib.contextmanager
def house(link: Link) -> Iterator[None]:
    """The router and the origin (router.network), and the LAN behind the router."""
    with network(link):
        made: list[str] = []
        try:
            sh("ip", "-n", CLIENT_NS, "link", "add", BRIDGE, "type", "bridge")
            sh("ip", "-n", CLIENT_NS, "addr", "add", f"{ROUTER_LAN_IP}/24", "dev", BRIDGE)
            sh("ip", "-n", CLIENT_NS, "link", "set", BRIDGE, "up")
            sh(*in_ns(CLIENT_NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
            sh("ip", "-n", ORIGIN_NS, "route", "add", LAN, "dev", ORIGIN_IF, "congctl", "cubic")
            for host in HOSTS:
                sh("ip", "netns", "add", host.ns)
                made.append(host.ns)
                sh("ip", "link", "add", host.dev, "netns", host.ns, "type", "veth", "peer",
                   "name", host.port, "netns", CLIENT_NS)  # fmt: skip
                sh("ip", "-n", CLIENT_NS, "link", "set", host.port, "master", BRIDGE, "up")
                sh("ip", "-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", host.dev)
                sh("ip", "-n", host.ns, "link", "set", host.dev, "up")
                sh("ip", "-n", host.ns, "link", "set", "lo", "up")
                # CUBIC, as router.py pins it on its own route.
                sh("ip", "-n", host.ns, "route", "add", "default", "via", ROUTER_LAN_IP,
                   "congctl", "cubic")  # fmt: skip
            yield
        finally:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def users_file(workdir: Path) -> Path:
    return htpasswd(workdir / "users", USERS)


@contextlib.contextmanager
def home_server(origin_port: int, *extra: str) -> Iterator[None]:
    """fyntr on the home server, bound to its LAN address, serving the allowed range."""
    command = fyntr_command(
        PROXY_PORT, "198.18.0.0/15", origin_port, "--bind", SERVER.ip, "--client-allow",
        ALLOWED, "--log-level", "warning", *extra,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(in_ns(SERVER.ns, *command), env=env)
    try:
        time.sleep(1.0)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def origin_server() -> Iterator[int]:
    proc = subprocess.Popen(
        in_ns(ORIGIN_NS, sys.executable, str(HERE / "origin.py"), ORIGIN_IP),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(10)


def windows(run: dict[str, Any]) -> list[dict[int, int]]:
    """A burst's flows: the bytes the origin got per 10 ms window (load.py ``windows``)."""
    return [{int(w): n for w, n in flow.items()} for flow in run["received"]]


def during(windows: dict[int, int], t0: float, end: float) -> int:
    """Bytes of 10 ms windows (time.monotonic() x 100) within [t0, end]."""
    return sum(n for w, n in windows.items() if t0 * 100 <= w < end * 100)


def run_case(name: str, fyntr_args: list[str] | None, link: Link) -> dict[str, Any]:
    with origin_server() as origin_port, contextlib.ExitStack() as stack:
        params: dict[str, Any] = {"proxy": None, "origin": origin_port, "host": ORIGIN_IP}
        if fyntr_args is not None:
            stack.enter_context(home_server(origin_port, *fyntr_args))
            params.update(proxy=PROXY_PORT, proxy_host=SERVER.ip)
        auth = fyntr_args is not None and "--auth-file" in fyntr_args
        of_a = {**params, **({"proxy_user": f"a:{USERS['a']}"} if auth else {})}
        of_b = {**params, **({"proxy_user": f"b:{USERS['b']}"} if auth else {})}
        probe = subprocess.Popen(
            in_ns(DEVICE_B.ns, *LOAD, "probe", json.dumps({**of_b, "interval": PROBE_INTERVAL_S})),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout is not None and probe.stdin is not None
        probe.stdout.readline()
        # B's one upload outlasts A's burst whoever gets what: the whole burst and B's
        # head start at the full rate, and as much again.
        b_size = int(link.rate_at(0) * (B_HEAD_START_S + 2 * A_FLOWS * A_SIZE / link.rate_at(0)))
        b_job = {**of_b, "clients": 1, "size": b_size, "windows": True, "timeout": 300}
        b_run = subprocess.Popen(
            in_ns(DEVICE_B.ns, *LOAD, "burst", json.dumps(b_job)), stdout=subprocess.PIPE, text=True
        )
        time.sleep(B_HEAD_START_S)
        a_job = {**of_a, "clients": A_FLOWS, "size": A_SIZE, "windows": True, "timeout": 300}
        a = load("burst", a_job, prefix=tuple(in_ns(DEVICE_A.ns)))
        b_out, _ = b_run.communicate(timeout=400)
        b = json.loads(b_out.strip().splitlines()[-1])
        probe.stdin.close()
        samples = json.loads(probe.stdout.read().strip().splitlines()[-1])["samples"]
        probe.wait(30)
    t0, end = a["burst_t0"], a["burst_end"]
    offered = link.offered(0, end - t0) * GOODPUT
    probe_rtts = [rtt for when, rtt in samples if t0 <= when <= end]
    return {
        "case": name,
        "a_makespan_s": a["burst_makespan_s"],
        "a_failures": a["burst_failures"],
        "b_failures": b["burst_failures"],
        "b_share": sum(during(f, t0, end) for f in windows(b)) / offered,
        "a_share": sum(during(f, t0, end) for f in windows(a)) / offered,
        "b_probe_p50_ms": percentile(probe_rtts, 50),
        "b_probe_p99_ms": percentile(probe_rtts, 99),
        "b_probe_time_p95_ms": time_quantile(probe_rtts, PROBE_INTERVAL_S, 0.95),
    }


def cases(workdir: Path) -> list[tuple[str, list[str] | None]]:
    return [
        ("direct", None),
        ("fyntr", []),
        ("fyntr --auth-file", ["--auth-file", str(users_file(workdir))]),
    ]


def bench(args: argparse.Namespace) -> dict[str, Any]:
    link = Link(args.uplink, None, fifo_ms=args.buffer_ms)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, house(link):
        for name, fyntr_args in cases(Path(tmp)):
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(run_case(name, fyntr_args, link))
    keys = list(rows[0])
    print("  ".join(f"{k:>18}" for k in keys))
    for row in rows:
        print("  ".join(f"{v:>18}" if isinstance(v, str) else f"{v:>18.3g}" for v in row.values()))
    print(
        f"\nuplink {args.uplink} with a {args.buffer_ms} ms FIFO; A: {A_FLOWS} x {A_SIZE} B "
        f"uploads; B: one upload, started {B_HEAD_START_S:g} s before, and a probe"
    )
    return {"args": vars(args), "rows": rows}


# --- the real clients of a house (--clients) ---------------------------------------------
SOCKS_CHECK = """
import sys
from python_socks import ProxyError
from python_socks.sync import Proxy
try:
    sock = Proxy.from_url(sys.argv[1]).connect(sys.argv[2], int(sys.argv[3]), timeout=10)
except ProxyError as exc:
    sys.exit(f"refused: {exc}")
sock.sendall(b"ECHO\\nhello from b")
got = b""
while len(got) < 12:
    got += sock.recv(64)
print(got.decode())
"""
REQUESTS_CHECK = """
import sys, requests
r = requests.get(sys.argv[2], proxies={"http": sys.argv[1]}, timeout=10)
print(r.status_code, len(r.content), r.headers.get("Proxy-Authenticate", ""))
"""
PAC_CHECK = """
import sys, pypac
pac = pypac.get_pac(url=sys.argv[1], allowed_content_types=["application/x-ns-proxy-autoconfig"])
print(pac.find_proxy_for_url(sys.argv[2], sys.argv[3]))
"""


def on(host: Host, *command: str) -> str:
    """A command on a device: its output, whatever its exit status."""
    out = subprocess.run(
        in_ns(host.ns, *command), capture_output=True, text=True, timeout=60, check=False
    )
    return (out.stdout + out.stderr).strip()


def check_clients() -> dict[str, str]:
    proxy = f"{SERVER.ip}:{PROXY_PORT}"
    alice = f"a:{USERS['a']}"
    with tempfile.TemporaryDirectory() as tmp, house(Link("20mbit", None)), origin_server() as port:
        extra = ("--auth-file", str(users_file(Path(tmp))), "--socks5-port", str(SOCKS_PORT))
        with home_server(port, *extra):
            url = f"http://{ORIGIN_IP}:{port}/"
            curl = ("curl", "-sS", "-o", "/dev/null", "-p", "-x", f"http://{proxy}",
                    "-w", "%{http_connect} %{http_code} %{size_download}")  # fmt: skip
            python = sys.executable
            socks, target = f"{SERVER.ip}:{SOCKS_PORT}", (ORIGIN_IP, str(port))
            page = ("https://example.com/", "example.com")
            return {
                "curl_proxy_user": on(DEVICE_A, *curl, "--proxy-user", alice, url),
                "curl_no_credentials": on(DEVICE_A, *curl, url),
                "curl_wrong_password": on(DEVICE_A, *curl, "--proxy-user", "a:wrong", url),
                "curl_outside_the_range": on(DEVICE_C, *curl, "--proxy-user", alice, url),
                "requests_credentials_in_url": on(
                    DEVICE_B, python, "-c", REQUESTS_CHECK, f"http://{alice}@{proxy}", url
                ),
                "requests_no_credentials": on(
                    DEVICE_B, python, "-c", REQUESTS_CHECK, f"http://{proxy}", url
                ),
                "socks5_user_password": on(
                    DEVICE_B, python, "-c", SOCKS_CHECK, f"socks5://{alice}@{socks}", *target
                ),
                "socks5_wrong_password": on(
                    DEVICE_B, python, "-c", SOCKS_CHECK, f"socks5://a:wrong@{socks}", *target
                ),
                "pac": on(DEVICE_B, python, "-c", PAC_CHECK, f"http://{proxy}/proxy.pac", *page),
            }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--uplink", default="20mbit", help="router uplink rate (tc syntax)")
    ap.add_argument("--buffer-ms", type=int, default=300, help="uplink FIFO depth, ms")
    ap.add_argument("--clients", action="store_true", help="the real clients' checks instead")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        print(
            "house.py needs root and iproute2 (ip, tc) to build its network namespaces; skipping."
        )
        return 0
    result: dict[str, Any] = check_clients() if args.clients else bench(args)
    if args.clients:
        print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
