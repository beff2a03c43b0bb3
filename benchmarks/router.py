"""A simulated home router: why fyntr helps, with no flags (docs/zero-configuration.md,
docs/benchmarks.md).

    sudo python benchmarks/router.py [--scenarios a,b,c,d,e | profiles | dsl,lte-up ...]
                                     [--uplink 20mbit] [--quick] [--buffer-ms 300]
                                     [--json PATH] [--plot PATH]

Two network namespaces made here and removed afterwards, even on failure: a client side
(the user's machine: load generator, probe and fyntr) and an origin side, joined by a
delay line (benchmarks/delayline.py: two TUN devices, a packet held for half the round
trip each way, with optional jitter). The client side's egress is the router's uplink:
a token bucket with a deep FIFO; the origin side's egress, the ISP's downlink. Addresses
come from the benchmarking range 198.18.0.0/15 and exist only inside these namespaces.

The profiles are the links people have, each with its rates, base RTT, jitter and FIFOs
(``PROFILES``: dsl, cable, fibre, lte whose uplink steps 5, 20, 40, 10 Mbit/s every
3 s, satellite); each runs an upload burst of 40 flows carrying 10 s of the link
(``-up``), the same as downloads (``-down``), half of each at once (``-mixed``, as a
``terraform apply``), the upload burst beside four long downloads (``-beside``), and
the upload burst once more after it and a pause in which fyntr stops shaping
(``-again``: the next ``terraform apply``; only the second is measured).

The classic scenarios use ``--uplink`` with a ``--buffer-ms`` FIFO and no added RTT:
* (a) a burst of 30 uploads of 512 KiB on the uplink (a ``tc tbf``);
* (b) the same with 1 MiB each, and the uplink falls to half (``tc qdisc change``) 2 s
  into the burst: Wi-Fi, DOCSIS or LTE changing under the user;
* (c) a router that cannot take more than ~25 new connections a second: SYNs go to an
  ``htb`` class of 16 kbit with a 4-packet ``pfifo`` (a ``u32`` filter on the SYN flag,
  byte 33 with a 20-byte IP header), SYNs beyond it are dropped; 40 uploads of 128 KiB;
* (d) 30 downloads of 512 KiB, the downlink (origin to client) a token bucket with the
  same deep FIFO: the ISP's side of the line;
* (e) no queue: 3 streams on that downlink, each paced by its origin at one segment
  every 20 ms for 5 s (a video, a slow API). A receiver's RTT counts the origin's pauses,
  so auto must not take them for queueing: it should not shape at all.

While the burst runs a probe makes small round trips. Each scenario runs direct and
through fyntr with no flags (auto rates); (a) also through fyntr unshaped (auto off)
and shaped by hand a little below the uplink; (d) also with download auto off
(``--download-rate 0``) and with a download rate set by hand a little below the link.
Reported: the probe's latency during the burst, the burst's makespan and failures, the
latest upload's start, SYNs the router dropped, and fyntr's rate over time (from its
/status). ``--plot`` draws the probe's RTT over time per scenario with fyntr's rate
overlaid (matplotlib: pip install '.[bench]'). Needs root; without it, says so and exits
0. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import percentile  # benchmarks/ is on sys.path when run as a script
from run import LOAD, fyntr_command, load

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))  # this checkout's fyntr
from fyntr.config import parse_rate  # noqa: E402
from fyntr.limits import AUTORATE_RELEASE_S  # noqa: E402
from fyntr.sched.measure import weighted_quantile  # noqa: E402

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


def rate_bytes(text: str) -> float:
    return float(parse_rate(text))


@dataclass(frozen=True)
class Link:
    """The line between the two namespaces: each way a token bucket with a FIFO of
    ``fifo_ms`` at its rate, and a delay line holding every packet for half of ``rtt_ms``
    (plus jitter); ``steps``: the uplink's rate in turn, ``step_s`` apart, from the
    burst's start (the downlink keeps its ratio to it)."""

    up: str
    down: str | None  # None: no downlink bottleneck
    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    fifo_ms: int = 300
    syn_limit: bool = False
    steps: tuple[str, ...] = ()
    step_s: float = 3.0

    def rate_at(self, t: float) -> float:
        """The uplink's rate (bytes/s) ``t`` seconds into the burst."""
        if not self.steps or t < 0:
            return rate_bytes(self.up)
        return rate_bytes(self.steps[int(t / self.step_s) % len(self.steps)])

    def offered(self, start: float, end: float) -> float:
        """Bytes the uplink could carry between ``start`` and ``end`` (s into the burst)."""
        total, t, tick = 0.0, start, 0.01
        while t < end:
            total += self.rate_at(t) * min(tick, end - t)
            t += tick
        return total


@contextlib.contextmanager
def network(link: Link) -> Iterator[None]:
    """Make the two namespaces and the delay line between them (two TUN devices, one
    in each namespace); always remove them again."""
    delay: subprocess.Popen[str] | None = None
    try:
        sh("ip", "netns", "add", CLIENT_NS)
        sh("ip", "netns", "add", ORIGIN_NS)
        delay = subprocess.Popen(
            in_ns(
                CLIENT_NS,
                sys.executable,
                str(HERE / "delayline.py"),
                CLIENT_IF,
                ORIGIN_IF,
                "--rtt-ms",
                str(link.rtt_ms),
                "--jitter-ms",
                str(link.jitter_ms),
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert delay.stdout is not None
        if delay.stdout.readline().strip() != "ready":
            raise RuntimeError("the delay line did not start (TUN devices need root)")
        sh("ip", "-n", CLIENT_NS, "link", "set", ORIGIN_IF, "netns", ORIGIN_NS)
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
        uplink_qdisc(link.up, link.fifo_ms, link.syn_limit)
        if link.down is not None:  # the ISP's side of the line
            downlink_qdisc(link.down, link.fifo_ms)
        yield
    finally:
        if delay is not None:
            delay.terminate()
            delay.wait(10)
        for ns in (CLIENT_NS, ORIGIN_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def tc(*args: str) -> None:
    sh("ip", "netns", "exec", CLIENT_NS, "tc", *args)


def uplink_qdisc(uplink: str, buffer_ms: int, syn_limit: bool, verb: str = "add") -> None:
    """The router's uplink, client -> origin: a token bucket with a deep FIFO; with
    ``syn_limit``, an htb whose SYN class takes ~25 SYNs a second into 4 packets."""
    if not syn_limit:
        tc("qdisc", verb, "dev", CLIENT_IF, "root", "tbf", "rate", uplink, "burst", "32kb",
           "latency", f"{buffer_ms}ms")  # fmt: skip
        return
    fifo_bytes = int(rate_bytes(uplink) * buffer_ms / 1000)
    tc("qdisc", "add", "dev", CLIENT_IF, "root", "handle", "1:", "htb", "default", "20")
    tc("class", "add", "dev", CLIENT_IF, "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit")
    tc("class", "add", "dev", CLIENT_IF, "parent", "1:1", "classid", "1:10", "htb",
       "rate", "16kbit", "ceil", "16kbit")  # fmt: skip
    tc("class", "add", "dev", CLIENT_IF, "parent", "1:1", "classid", "1:20", "htb",
       "rate", uplink, "ceil", uplink)  # fmt: skip
    tc("qdisc", "add", "dev", CLIENT_IF, "parent", "1:10", "handle", "10:", "pfifo", "limit", "4")
    tc("qdisc", "add", "dev", CLIENT_IF, "parent", "1:20", "handle", "20:", "bfifo",
       "limit", str(fifo_bytes))  # fmt: skip
    # TCP flags are byte 13 of the TCP header: byte 33 with a 20-byte IP header (u32's
    # nexthdr+13 points into the IP header here). SYN is 0x02.
    tc("filter", "add", "dev", CLIENT_IF, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
       "match", "ip", "protocol", "6", "0xff", "match", "u8", "0x02", "0x02", "at", "33",
       "flowid", "1:10")  # fmt: skip


def downlink_qdisc(rate: str, buffer_ms: int, verb: str = "add") -> None:
    """The downlink, origin -> client: a token bucket with a deep FIFO."""
    sh("ip", "netns", "exec", ORIGIN_NS, "tc", "qdisc", verb, "dev", ORIGIN_IF, "root", "tbf",
       "rate", rate, "burst", "32kb", "latency", f"{buffer_ms}ms")  # fmt: skip


def syn_drops() -> int:
    out = subprocess.run(
        in_ns(CLIENT_NS, "tc", "-s", "qdisc", "show", "dev", CLIENT_IF),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("qdisc pfifo 10:"):
            return int(lines[i + 1].split("dropped ")[1].split(",")[0])
    return 0


def fetch_status(port: int) -> tuple[float, dict[str, Any]]:
    """fyntr's /status from inside the client namespace, and when it was taken."""
    code = (
        "import json, sys, time, urllib.request\n"
        f"r = urllib.request.urlopen('http://127.0.0.1:{port}/status', timeout=5)\n"
        "print(json.dumps([time.monotonic(), json.load(r)]))"
    )
    out = subprocess.run(
        in_ns(CLIENT_NS, sys.executable, "-c", code), capture_output=True, text=True, check=True
    )
    at, status = json.loads(out.stdout)
    return float(at), status


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    clients: int
    size: str
    syn_limit: bool = False
    halve_after_s: float | None = None  # the uplink falls to half this long into the burst
    # "upload", "download", "trickle" (paced downloads), "mixed" (every other client
    # downloads ``download_size``), or "beside" (uploads while 4 long downloads of
    # ``download_size`` each run)
    direction: str = "upload"
    link: Link | None = None  # None: --uplink with a --buffer-ms FIFO, no added RTT
    download_size: str = "0"
    again: bool = False  # the burst runs once before, then AGAIN_PAUSE_S of the probe alone

    @property
    def downlink(self) -> bool:
        return self.direction != "upload"

    def line(self, args: argparse.Namespace) -> Link:
        if self.link is not None:
            return self.link
        down = args.uplink if self.downlink else None
        return Link(args.uplink, down, fifo_ms=args.buffer_ms, syn_limit=self.syn_limit)


SCENARIOS = {
    "a": Scenario("a", "uplink bloat", 30, "512KiB"),
    "b": Scenario("b", "uplink halves 2 s into the burst", 30, "1MiB", halve_after_s=2.0),
    "c": Scenario("c", "router takes ~25 new connections/s", 40, "128KiB", syn_limit=True),
    "d": Scenario("d", "download burst, downlink bloat", 30, "512KiB", direction="download"),
    "e": Scenario("e", "paced streams, no queue", 3, "362KB", direction="trickle"),
}

# The links people have (docs/zero-configuration.md): uplink and downlink rates, base
# RTT, jitter, and the FIFO a consumer router or modem keeps in front of each.
PROFILES = {
    "dsl": Link("1mbit", "8mbit", rtt_ms=30, fifo_ms=1000),
    "cable": Link("10mbit", "100mbit", rtt_ms=20, fifo_ms=500),
    "fibre": Link("100mbit", "100mbit", rtt_ms=5, fifo_ms=50),
    "lte": Link(
        "5mbit",
        "20mbit",
        rtt_ms=50,
        jitter_ms=15,
        fifo_ms=300,
        steps=("5mbit", "20mbit", "40mbit", "10mbit"),
    ),
    "satellite": Link("5mbit", "50mbit", rtt_ms=600, fifo_ms=1000),
}
PROFILE_CLIENTS = 40
PROFILE_BURST_S = 10.0  # a burst carries this long of the link's (mean) rate
AGAIN_PAUSE_S = AUTORATE_RELEASE_S + 5  # fyntr has stopped shaping when the next burst comes


def mean_up(link: Link) -> float:
    steps = link.steps or (link.up,)
    return sum(rate_bytes(r) for r in steps) / len(steps)


def profile_scenarios(name: str, link: Link) -> dict[str, Scenario]:
    """Each link's upload burst, download burst, mixed load and upload beside a long
    download, sized to the link: 40 flows carrying PROFILE_BURST_S of its rate."""
    up = int(mean_up(link) * PROFILE_BURST_S / PROFILE_CLIENTS)
    down_rate = rate_bytes(link.down or link.up) * mean_up(link) / rate_bytes(link.up)
    down = int(down_rate * PROFILE_BURST_S / PROFILE_CLIENTS)
    long = int(down_rate * 1.5 * PROFILE_BURST_S / 4)  # four downloads outlasting the uploads
    made = [
        Scenario(f"{name}-up", f"{name}: upload burst", PROFILE_CLIENTS, str(up), link=link),
        Scenario(
            f"{name}-down",
            f"{name}: download burst",
            PROFILE_CLIENTS,
            str(down),
            direction="download",
            link=link,
        ),
        Scenario(
            f"{name}-mixed",
            f"{name}: uploads and downloads at once (terraform apply)",
            PROFILE_CLIENTS,
            str(up),
            direction="mixed",
            link=link,
            download_size=str(down),
        ),
        Scenario(
            f"{name}-again",
            f"{name}: upload burst, {AGAIN_PAUSE_S:g} s after the same burst",
            PROFILE_CLIENTS,
            str(up),
            link=link,
            again=True,
        ),
        Scenario(
            f"{name}-beside",
            f"{name}: upload burst beside 4 long downloads",
            PROFILE_CLIENTS,
            str(up),
            direction="beside",
            link=link,
            download_size=str(long),
        ),
    ]
    return {s.key: s for s in made}


for _name, _link in PROFILES.items():
    SCENARIOS.update(profile_scenarios(_name, _link))


def expand(keys: str) -> list[Scenario]:
    """Scenario keys; a profile's name stands for its four, "profiles" for all of them."""
    out: list[Scenario] = []
    for key in keys.split(","):
        if key == "profiles":
            out += [s for s in SCENARIOS.values() if s.link is not None]
        elif key in PROFILES:
            out += [s for s in SCENARIOS.values() if s.key.startswith(f"{key}-")]
        else:
            out.append(SCENARIOS[key])
    return out


METRICS_PORT = 17999
PROBE_INTERVAL_S = 0.02
HISTORY_TICK_S = 0.1  # fyntr's auto-rate history: one point per tick


def run_case(
    name: str,
    fyntr_args: list[str] | None,
    scenario: Scenario,
    args: argparse.Namespace,
    workdir: Path,
    *,
    parent: str | None = None,
) -> dict[str, Any]:
    accepts = workdir / f"accepts-{scenario.key}-{len(name)}.json"
    origin = subprocess.Popen(
        in_ns(ORIGIN_NS, sys.executable, str(HERE / "origin.py"), ORIGIN_IP, str(accepts)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    proxy = None
    background: subprocess.Popen[bytes] | None = None
    link = scenario.line(args)
    status: tuple[float, dict[str, Any]] | None = None
    idle_until = math.inf  # the probe's idle baseline ends: the first burst's start
    phase_before: str | None = None  # fyntr's upload rate's phase as the measured burst starts
    halved_at: list[float] = []
    assert origin.stdout is not None and origin.stdin is not None
    drops_before = syn_drops() if scenario.syn_limit else 0
    stack = contextlib.ExitStack()  # fyntr's log, under --log-dir
    try:
        origin_port = int(origin.stdout.readline())
        params: dict[str, Any] = {"proxy": None, "origin": origin_port, "host": ORIGIN_IP}
        if parent is not None:
            stack.enter_context(parent_proxy(parent, origin_port, workdir))
        if fyntr_args is not None:
            port = 18000 + len(name)
            env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
            command = fyntr_command(
                port,
                "198.18.0.0/15",
                origin_port,
                "--log-level",
                "warning" if args.log_dir is None else "info",
                "--metrics-port",
                str(METRICS_PORT),
                *fyntr_args,
            )
            if args.log_dir is not None:
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                args.log_dir.mkdir(parents=True, exist_ok=True)
                log_path = args.log_dir / f"fyntr-{scenario.key}-{slug}.log"
                log_file = stack.enter_context(log_path.open("w"))
            proxy = subprocess.Popen(
                in_ns(CLIENT_NS, *command),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if args.log_dir is None else log_file,
            )
            time.sleep(1.0)
            params["proxy"] = port
        probe = subprocess.Popen(
            in_ns(
                CLIENT_NS,
                sys.executable,
                str(HERE / "load.py"),
                "probe",
                json.dumps({**params, "interval": PROBE_INTERVAL_S}),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout is not None and probe.stdin is not None
        probe.stdout.readline()
        time.sleep(1.0)  # the probe's idle baseline
        if scenario.halve_after_s is not None:
            halved = rate_bytes(args.uplink) / 2

            def halve() -> None:
                time.sleep(scenario.halve_after_s or 0)
                uplink_qdisc(f"{halved * 8 / 1e6:g}mbit", args.buffer_ms, False, verb="change")
                halved_at.append(time.monotonic())

            threading.Thread(target=halve, daemon=True).start()
        if scenario.direction == "beside":  # the long downloads first, filling the downlink
            background = subprocess.Popen(
                in_ns(
                    CLIENT_NS,
                    *LOAD,
                    "burst",
                    json.dumps(
                        {
                            **params,
                            "clients": 4,
                            "size": int(rate_bytes(scenario.download_size)),
                            "direction": "download",
                            "timeout": 300,
                        }
                    ),
                ),
                stdout=subprocess.DEVNULL,
            )
            time.sleep(2.0)
        size = int(rate_bytes(scenario.size))
        burst_params = {
            **params,
            "clients": scenario.clients,
            "size": size,
            "direction": "upload" if scenario.direction == "beside" else scenario.direction,
            "download_size": int(rate_bytes(scenario.download_size)),
            "timeout": 300,
        }
        netns = ("ip", "netns", "exec", CLIENT_NS)
        if scenario.again:
            idle_until = load("burst", burst_params, prefix=netns)["burst_t0"]
            time.sleep(AGAIN_PAUSE_S)
            if proxy is not None:
                phase_before = fetch_status(METRICS_PORT)[1]["rates"]["upload"]["phase"]
        stepping = threading.Event()
        if link.steps:
            threading.Thread(target=step_link, args=(link, stepping), daemon=True).start()
        try:
            burst = load("burst", burst_params, prefix=netns)
        finally:
            stepping.set()
            if link.steps:  # back to the first step for the next case
                uplink_qdisc(link.up, link.fifo_ms, False, verb="change")
                if link.down is not None:
                    downlink_qdisc(link.down, link.fifo_ms, verb="change")
            if background is not None:
                background.terminate()
                background.wait(10)
        if proxy is not None:
            status = fetch_status(METRICS_PORT)
        time.sleep(0.5)
        probe.stdin.close()
        samples = json.loads(probe.stdout.read().strip().splitlines()[-1])["samples"]
        probe.wait(30)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        stack.close()
        origin.stdin.close()
        origin.wait(10)
        if scenario.halve_after_s is not None:
            uplink_qdisc(args.uplink, args.buffer_ms, False, verb="change")
    t0, end = burst["burst_t0"], burst["burst_end"]
    during = [rtt for when, rtt in samples if t0 <= when <= end]
    idle = [rtt for when, rtt in samples if when < min(t0, idle_until)]
    opened = sorted(t for t in json.loads(accepts.read_text()) if t >= t0 - 0.001)
    peak, j = 0, 0
    for i, t in enumerate(opened):
        while opened[j] < t - 0.010:
            j += 1
        peak = max(peak, i - j + 1)
    row: dict[str, Any] = {
        "scenario": scenario.key,
        "case": name,
        "probe_idle_p50_ms": percentile(idle, 50),
        "probe_p50_ms": percentile(during, 50),
        "probe_p99_ms": percentile(during, 99),
        "probe_time_p50_ms": time_quantile(during, PROBE_INTERVAL_S, 0.5),
        "probe_time_p95_ms": time_quantile(during, PROBE_INTERVAL_S, 0.95),
        "makespan_s": burst["burst_makespan_s"],
        "failures": burst["burst_failures"],
        "last_upload_start_s": burst["burst_last_start_s"],
        "peak_new_conn_per_10ms": peak,
        "syn_drops": syn_drops() - drops_before if scenario.syn_limit else 0,
        "probe_samples": [(round(when - t0, 4), round(rtt, 3)) for when, rtt in samples],
    }
    if phase_before is not None:
        row["phase_before"] = phase_before
    moved = scenario.clients * size
    if scenario.direction in ("upload", "beside") and row["makespan_s"] == row["makespan_s"]:
        transfer = burst["burst_end"] - t0
        row["uplink_used"] = moved / link.offered(0, transfer)  # of what it offered
    if halved_at:
        settled = halved_at[0] + 5.0
        row["probe_p50_ms_5s_after_halving"] = percentile(
            [rtt for when, rtt in samples if settled <= when <= end], 50
        )
    if status is not None:
        taken, data = status
        shaped = data["rates"]["download" if scenario.downlink else "upload"]
        row["rate_history"] = [
            (round(taken - ago - t0, 3), rate, achieved, delay)
            for ago, rate, achieved, delay in shaped["history"]
        ]
        row["connect_rate_end"] = data["rates"]["connect"]["rate"]
        # Under auto, the seconds of the burst with a rate in force (one point a tick).
        if shaped["auto"]:
            row["shaped_s"] = HISTORY_TICK_S * sum(
                1
                for t, rate, _achieved, _delay in row["rate_history"]
                if rate and 0 <= t <= end - t0
            )
    return row


def time_quantile(rtts_ms: list[float], interval_s: float, q: float) -> float:
    """The RTT the probe saw for the fraction ``q`` of the burst's time: each round trip
    weighs the time it took plus the pause after it. A plain percentile counts round
    trips, and a probe stuck behind a 300 ms queue makes 15 times fewer of them than one
    that is not."""
    value = weighted_quantile([(rtt, rtt / 1000 + interval_s) for rtt in rtts_ms], q)
    return float("nan") if value is None else value


def step_link(link: Link, done: threading.Event) -> None:
    """The uplink (and the downlink, in proportion) through ``link.steps`` until done."""
    ratio = rate_bytes(link.down) / rate_bytes(link.up) if link.down else 0.0
    n = 0
    while not done.wait(0 if n == 0 else link.step_s):
        rate = rate_bytes(link.steps[n % len(link.steps)])
        uplink_qdisc(f"{rate * 8 / 1e6:g}mbit", link.fifo_ms, False, verb="change")
        if ratio:
            downlink_qdisc(f"{rate * ratio * 8 / 1e6:g}mbit", link.fifo_ms, verb="change")
        n += 1


# Where a parent proxy (tinyproxy) sits in the --parents cases: behind the router (in the
# origin's namespace, a company proxy across the uplink) or on the LAN (the client's
# namespace, on its non-loopback address: the path to it crosses no router).
PARENT_PLACES = {"behind the router": (ORIGIN_NS, ORIGIN_IP), "on the LAN": (CLIENT_NS, CLIENT_IP)}
PARENT_PORT = 13128


@contextlib.contextmanager
def parent_proxy(place: str, origin_port: int, workdir: Path) -> Iterator[None]:
    """tinyproxy as the parent, in its place (``PARENT_PLACES``), until the case ends."""
    ns, ip = PARENT_PLACES[place]
    conf = workdir / "parent.conf"
    conf.write_text(
        f"Port {PARENT_PORT}\nListen {ip}\nTimeout 600\nMaxClients 1024\n"
        f'Allow 198.18.0.0/15\nLogLevel Critical\nLogFile "{workdir / "parent.log"}"\n'
        f"ConnectPort {origin_port}\nDisableViaHeader Yes\n"
    )
    proc = subprocess.Popen(in_ns(ns, "tinyproxy", "-d", "-c", str(conf)))
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def cases(
    scenario: Scenario, uplink: str, quick: bool, parents: bool = False
) -> list[tuple[str, list[str] | None, str | None]]:
    out: list[tuple[str, list[str] | None, str | None]] = [
        ("direct", None, None),
        ("fyntr, no flags", [], None),
    ]
    if parents:
        for place, (_ns, ip) in PARENT_PLACES.items():
            upstream = ["--upstream", f"http://{ip}:{PARENT_PORT}"]
            out.append((f"fyntr, parent {place}", upstream, place))
    shaped = int(rate_bytes(uplink) * 0.9)  # a little below the link
    if scenario.key == "d":
        out.append(("fyntr --download-rate 0", ["--download-rate", "0"], None))  # auto off
        if not quick:
            out.append(("fyntr --download-rate 90%", ["--download-rate", str(shaped)], None))
    if scenario.key == "a" and not quick:
        out += [
            (
                "fyntr unshaped",
                ["--upload-rate", "0", "--download-rate", "0", "--connect-rate", "0"],
                None,
            ),
            (
                "fyntr --upload-rate 90% --connect-rate 20",
                ["--upload-rate", str(shaped), "--connect-rate", "20", "--connect-burst", "4"],
                None,
            ),
        ]
    return out


COLUMNS = [
    ("scenario", "scenario"),
    ("case", "case"),
    ("probe_idle_p50_ms", "probe idle p50 ms"),
    ("probe_p50_ms", "probe p50 ms (burst)"),
    ("probe_p99_ms", "probe p99 ms (burst)"),
    ("probe_time_p50_ms", "probe p50 ms over time (burst)"),
    ("probe_time_p95_ms", "probe p95 ms over time (burst)"),
    ("probe_p50_ms_5s_after_halving", "probe p50 ms, 5 s after halving"),
    ("makespan_s", "makespan s"),
    ("failures", "failures"),
    ("last_upload_start_s", "last upload starts s"),
    ("syn_drops", "SYNs dropped"),
    ("peak_new_conn_per_10ms", "peak new conns / 10 ms"),
    ("shaped_s", "fyntr shaped s"),
    ("phase_before", "fyntr before"),
    ("uplink_used", "uplink used"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key, "")
        return value if isinstance(value, str) else f"{value:.3g}"

    table = [[label for _key, label in COLUMNS]]
    table += [[cell(r, key) for key, _label in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for n, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """The probe's RTT over time per scenario, direct and through fyntr, with fyntr's
    auto upload rate overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({r["scenario"] for r in rows})
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 3.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        for row in (r for r in rows if r["scenario"] == key):
            if row["case"] not in ("direct", "fyntr, no flags"):
                continue
            when = [t for t, _ in row["probe_samples"]]
            ax.plot(when, [rtt for _, rtt in row["probe_samples"]], lw=0.8, label=row["case"])
            if "rate_history" in row:
                rate_ax = ax.twinx()
                hist = row["rate_history"]
                rate_ax.step(
                    [t for t, *_ in hist],
                    [(r or 0) * 8 / 1e6 for _t, r, *_ in hist],
                    where="post",
                    color="tab:green",
                    lw=1,
                    label="fyntr auto upload rate",
                )
                rate_ax.set_ylabel("rate Mbit/s (0: unlimited)", color="tab:green")
                rate_ax.set_ylim(bottom=0)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("probe RTT ms")
        ax.set_title(f"({key}) {SCENARIOS[key].title}")
        ax.legend(loc="upper right")
    axes[-1, 0].set_xlabel("seconds from the burst's start")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def check_link(rtt_ms: float, jitter_ms: float) -> dict[str, float]:
    """What the delay line adds and whether it limits: 64-byte round trips and one
    64 MiB transfer each way through it, with no token bucket that binds (10 Gbit/s)."""
    link = Link("10gbit", "10gbit", rtt_ms=rtt_ms, jitter_ms=jitter_ms, fifo_ms=50)
    with network(link), tempfile.TemporaryDirectory() as tmp:
        origin = subprocess.Popen(
            in_ns(ORIGIN_NS, sys.executable, str(HERE / "origin.py"), ORIGIN_IP, f"{tmp}/a"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert origin.stdout is not None and origin.stdin is not None
        try:
            params = {"proxy": None, "origin": int(origin.stdout.readline()), "host": ORIGIN_IP}
            prefix = ("ip", "netns", "exec", CLIENT_NS)
            echo = load("latency", {**params, "count": 20, "warmup": 2}, prefix=prefix)
            moved = {
                d: load(
                    "throughput",
                    {**params, "direction": d, "size": 64 * 2**20, "streams": 1},
                    prefix=prefix,
                )["mb_s"]
                for d in ("upload", "download")
            }
        finally:
            origin.stdin.close()
            origin.wait(10)
    return {
        "rtt_ms_asked": rtt_ms,
        "jitter_ms_asked": jitter_ms,
        "echo_rtt_p50_ms": echo["rtt_p50_us"] / 1000,
        "echo_rtt_p99_ms": echo["rtt_p99_us"] / 1000,
        "upload_mbit_s": moved["upload"] * 8,
        "download_mbit_s": moved["download"] * 8,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--scenarios",
        default="a,b,c,d,e",
        help="comma list of a-e, of profile scenarios (dsl-up, lte-beside ...), of profiles "
        f"({', '.join(PROFILES)}: their up, down, mixed and beside), or 'profiles' for all",
    )
    ap.add_argument("--uplink", default="20mbit", help="router uplink rate (tc syntax)")
    ap.add_argument("--buffer-ms", type=int, default=300, help="uplink FIFO depth, ms")
    ap.add_argument("--quick", action="store_true", help="direct and fyntr with no flags only")
    ap.add_argument(
        "--parents",
        action="store_true",
        help="also through a parent proxy (tinyproxy) behind the router and on the LAN",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="write a PNG (needs matplotlib)")
    ap.add_argument(
        "--log-dir", type=Path, default=None, help="keep fyntr's INFO log of each case here"
    )
    ap.add_argument(
        "--check-link",
        type=float,
        default=None,
        metavar="RTT_MS",
        help="only measure what the delay line adds at this RTT (with --jitter-ms) and exit",
    )
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="with --check-link")
    args = ap.parse_args(argv)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        # Said before the runs, not in a traceback after minutes of them.
        ap.error("--plot needs matplotlib: .venv/bin/pip install '.[bench]'")
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        print(
            "router.py needs root and iproute2 (ip, tc) to build its network namespaces; skipping."
        )
        return 0
    if args.check_link is not None:
        print(json.dumps(check_link(args.check_link, args.jitter_ms)))
        return 0
    chosen = expand(args.scenarios)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in chosen:
            with network(scenario.line(args)):
                for name, fyntr_args, parent in cases(
                    scenario, args.uplink, args.quick, args.parents
                ):
                    print(f"running ({scenario.key}) {name} ...", file=sys.stderr, flush=True)
                    rows.append(
                        run_case(name, fyntr_args, scenario, args, Path(tmp), parent=parent)
                    )
    print_table(rows)
    print(
        f"\nuplink {args.uplink} with a {args.buffer_ms} ms FIFO; probe: 64-byte round trips "
        "every 20 ms; " + "; ".join(f"({s.key}) {s.clients} x {s.size}" for s in chosen)
    )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
