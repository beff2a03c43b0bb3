"""A simulated home router: why shaping in fyntr helps (issue 8, SPEC §7).

    sudo python benchmarks/router.py [--uplink 20mbit] [--buffer-ms 300] [--clients 30]
                                     [--size 512KiB] [--json PATH]

Two network namespaces made here and removed afterwards, even on failure: a client side
(the user's machine: load generator, probe and fyntr) and an origin side, joined by a
veth pair. The client side's egress is a ``tc tbf`` token bucket of ``--uplink`` with a
``--buffer-ms`` deep FIFO: a consumer router's uplink and its bloated queue. Addresses
come from the benchmarking range 198.18.0.0/15 and exist only inside these namespaces.

While a burst of uploads runs (``--clients`` connections at once, as terraform apply or
aws s3 cp --recursive open them), a probe does small request/response round trips. For
direct, fyntr with defaults, and fyntr shaped a little below the uplink with connection
pacing, it reports the probe's latency during the burst, the burst's makespan and the
peak of new connections per 10 ms at the router. Needs root; without it, says so and
exits 0. A benchmark, not a test.
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
from pathlib import Path
from typing import Any

from run import fyntr_command  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUFFIX = str(os.getpid())
CLIENT_NS, ORIGIN_NS = f"fyntr-cli-{SUFFIX}", f"fyntr-org-{SUFFIX}"
CLIENT_IF, ORIGIN_IF = f"fc{SUFFIX}"[:15], f"fo{SUFFIX}"[:15]
CLIENT_IP, ORIGIN_IP = "198.18.0.1", "198.18.0.2"  # RFC 2544 benchmarking range


def sh(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


@contextlib.contextmanager
def network(uplink: str, buffer_ms: int) -> Iterator[None]:
    """Make the two namespaces; always remove them again."""
    try:
        sh("ip", "netns", "add", CLIENT_NS)
        sh("ip", "netns", "add", ORIGIN_NS)
        sh(
            "ip",
            "link",
            "add",
            CLIENT_IF,
            "netns",
            CLIENT_NS,
            "type",
            "veth",
            "peer",
            "name",
            ORIGIN_IF,
            "netns",
            ORIGIN_NS,
        )
        for ns, dev, ip in ((CLIENT_NS, CLIENT_IF, CLIENT_IP), (ORIGIN_NS, ORIGIN_IF, ORIGIN_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # This machine defaults to BBR, whose policer detection makes unshaped flows
            # through a tbf wander between runs; pin CUBIC on the benchmark's route.
            sh(
                "ip",
                "-n",
                ns,
                "route",
                "replace",
                "198.18.0.0/24",
                "dev",
                dev,
                "proto",
                "kernel",
                "scope",
                "link",
                "src",
                ip,
                "congctl",
                "cubic",
            )
        # The router's uplink: client -> origin through a token bucket with a deep FIFO.
        sh(
            "ip",
            "netns",
            "exec",
            CLIENT_NS,
            "tc",
            "qdisc",
            "add",
            "dev",
            CLIENT_IF,
            "root",
            "tbf",
            "rate",
            uplink,
            "burst",
            "32kb",
            "latency",
            f"{buffer_ms}ms",
        )
        yield
    finally:
        for ns in (CLIENT_NS, ORIGIN_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def load(workload: str, params: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        in_ns(CLIENT_NS, sys.executable, str(HERE / "load.py"), workload, json.dumps(params)),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-500:])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
        if ordered
        else float("nan")
    )


def run_case(
    name: str, fyntr_args: list[str] | None, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    accepts = workdir / f"accepts-{name}.json"
    origin = subprocess.Popen(
        in_ns(ORIGIN_NS, sys.executable, str(HERE / "origin.py"), ORIGIN_IP, str(accepts)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    proxy = None
    assert origin.stdout is not None and origin.stdin is not None
    try:
        origin_port = int(origin.stdout.readline())
        params: dict[str, Any] = {"proxy": None, "origin": origin_port, "host": ORIGIN_IP}
        if fyntr_args is not None:
            port = 18000 + len(name)
            env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
            proxy = subprocess.Popen(
                in_ns(
                    CLIENT_NS,
                    *fyntr_command(
                        port, "198.18.0.0/15", origin_port, "--log-level", "warning", *fyntr_args
                    ),
                ),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            params["proxy"] = port
        probe = subprocess.Popen(
            in_ns(
                CLIENT_NS,
                sys.executable,
                str(HERE / "load.py"),
                "probe",
                json.dumps({**params, "interval": 0.02}),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout is not None and probe.stdin is not None
        probe.stdout.readline()
        time.sleep(1.0)  # the probe's idle baseline
        burst = load("burst", {**params, "clients": args.clients, "size": args.size})
        time.sleep(0.5)
        probe.stdin.close()
        samples = json.loads(probe.stdout.read().strip().splitlines()[-1])["samples"]
        probe.wait(30)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        origin.stdin.close()
        origin.wait(10)
    t0, end = burst["burst_t0"], burst["burst_end"]
    during = [rtt for when, rtt in samples if t0 <= when <= end]
    idle = [rtt for when, rtt in samples if when < t0]
    opened = sorted(t for t in json.loads(accepts.read_text()) if t >= t0 - 0.001)
    peak, j = 0, 0
    for i, t in enumerate(opened):
        while opened[j] < t - 0.010:
            j += 1
        peak = max(peak, i - j + 1)
    return {
        "case": name,
        "probe_idle_p50_ms": percentile(idle, 50),
        "probe_p50_ms": percentile(during, 50),
        "probe_p99_ms": percentile(during, 99),
        "makespan_s": burst["burst_makespan_s"],
        "failures": burst["burst_failures"],
        "peak_new_conn_per_10ms": peak,
        "probe_samples": [(round(when - t0, 4), round(rtt, 3)) for when, rtt in samples],
    }


def rate_bytes(text: str) -> float:
    sys.path.insert(0, str(REPO / "src"))
    from fyntr.config import parse_rate

    return float(parse_rate(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--uplink", default="20mbit", help="router uplink rate (tc syntax)")
    ap.add_argument("--buffer-ms", type=int, default=300, help="uplink FIFO depth, ms")
    ap.add_argument("--clients", type=int, default=30, help="uploads in the burst")
    ap.add_argument("--size", default="512KiB", help="bytes each upload sends")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        print(
            "router.py needs root and iproute2 (ip, tc) to build its network namespaces; skipping."
        )
        return 0
    args.size = int(rate_bytes(args.size))
    shaped_rate = int(rate_bytes(args.uplink) * 0.9)  # a little below the uplink
    cases: list[tuple[str, list[str] | None]] = [
        ("direct", None),
        ("fyntr (defaults)", []),
        ("fyntr (--upload-rate auto)", ["--upload-rate", "auto"]),
        (
            "fyntr (--upload-rate 90% of uplink, --connect-rate 20)",
            ["--upload-rate", str(shaped_rate), "--connect-rate", "20", "--connect-burst", "4"],
        ),
    ]
    rows = []
    with network(args.uplink, args.buffer_ms), tempfile.TemporaryDirectory() as tmp:
        for name, fyntr_args in cases:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(run_case(name, fyntr_args, args, Path(tmp)))
    head = [
        "case",
        "probe idle p50 ms",
        "probe p50 ms (burst)",
        "probe p99 ms (burst)",
        "burst makespan s",
        "failures",
        "peak new conns / 10 ms",
    ]
    keys = [
        "case",
        "probe_idle_p50_ms",
        "probe_p50_ms",
        "probe_p99_ms",
        "makespan_s",
        "failures",
        "peak_new_conn_per_10ms",
    ]
    table = [head] + [
        [r[k] if isinstance(r[k], str) else f"{r[k]:.3g}" for k in keys] for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for n, row in enumerate(table):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(
        f"\nuplink {args.uplink} with a {args.buffer_ms} ms FIFO; {args.clients} uploads of "
        f"{args.size} bytes at once; probe: 64-byte round trips every 20 ms"
    )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
