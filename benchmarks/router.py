"""A simulated home router: why fyntr helps, with no flags (SPEC §5.1, §7).

    sudo python benchmarks/router.py [--scenarios a,b,c,d,e] [--uplink 20mbit] [--quick]
                                     [--buffer-ms 300] [--json PATH] [--plot PATH]

Two network namespaces made here and removed afterwards, even on failure: a client side
(the user's machine: load generator, probe and fyntr) and an origin side, joined by a
veth pair. The client side's egress is the router's uplink: ``--uplink`` with a
``--buffer-ms`` deep FIFO. Addresses come from the benchmarking range 198.18.0.0/15 and
exist only inside these namespaces. Scenarios:

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
import json
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
from run import fyntr_command, load

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))  # this checkout's fyntr
from fyntr.config import parse_rate  # noqa: E402
from fyntr.sched.autorate import weighted_median  # noqa: E402

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
def network(uplink: str, buffer_ms: int, syn_limit: bool, downlink: bool) -> Iterator[None]:
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
        uplink_qdisc(uplink, buffer_ms, syn_limit)
        if downlink:  # the same token bucket and FIFO on the way back: the ISP's downlink
            sh(
                "ip",
                "netns",
                "exec",
                ORIGIN_NS,
                "tc",
                "qdisc",
                "add",
                "dev",
                ORIGIN_IF,
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
    direction: str = "upload"  # or "download", or "trickle": paced downloads
    # (both through a downlink as deep as the uplink)

    @property
    def downlink(self) -> bool:
        return self.direction != "upload"


SCENARIOS = {
    "a": Scenario("a", "uplink bloat", 30, "512KiB"),
    "b": Scenario("b", "uplink halves 2 s into the burst", 30, "1MiB", halve_after_s=2.0),
    "c": Scenario("c", "router takes ~25 new connections/s", 40, "128KiB", syn_limit=True),
    "d": Scenario("d", "download burst, downlink bloat", 30, "512KiB", direction="download"),
    "e": Scenario("e", "paced streams, no queue", 3, "362KB", direction="trickle"),
}

METRICS_PORT = 17999
PROBE_INTERVAL_S = 0.02
HISTORY_TICK_S = 0.1  # fyntr's auto-rate history: one point per tick


def run_case(
    name: str,
    fyntr_args: list[str] | None,
    scenario: Scenario,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    accepts = workdir / f"accepts-{scenario.key}-{len(name)}.json"
    origin = subprocess.Popen(
        in_ns(ORIGIN_NS, sys.executable, str(HERE / "origin.py"), ORIGIN_IP, str(accepts)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    proxy = None
    status: tuple[float, dict[str, Any]] | None = None
    halved_at: list[float] = []
    assert origin.stdout is not None and origin.stdin is not None
    drops_before = syn_drops() if scenario.syn_limit else 0
    stack = contextlib.ExitStack()  # fyntr's log, under --log-dir
    try:
        origin_port = int(origin.stdout.readline())
        params: dict[str, Any] = {"proxy": None, "origin": origin_port, "host": ORIGIN_IP}
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
        size = int(rate_bytes(scenario.size))
        burst = load(
            "burst",
            {
                **params,
                "clients": scenario.clients,
                "size": size,
                "direction": scenario.direction,
            },
            prefix=("ip", "netns", "exec", CLIENT_NS),
        )
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
    idle = [rtt for when, rtt in samples if when < t0]
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
        "probe_time_p50_ms": time_median(during, PROBE_INTERVAL_S),
        "makespan_s": burst["burst_makespan_s"],
        "failures": burst["burst_failures"],
        "last_upload_start_s": burst["burst_last_start_s"],
        "peak_new_conn_per_10ms": peak,
        "syn_drops": syn_drops() - drops_before if scenario.syn_limit else 0,
        "probe_samples": [(round(when - t0, 4), round(rtt, 3)) for when, rtt in samples],
    }
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


def time_median(rtts_ms: list[float], interval_s: float) -> float:
    """The RTT the probe saw for half the burst's time: each round trip weighs the time
    it took plus the pause after it. The plain median counts round trips, and a probe
    stuck behind a 300 ms queue makes 15 times fewer of them than one that is not."""
    median = weighted_median([(rtt, rtt / 1000 + interval_s) for rtt in rtts_ms])
    return float("nan") if median is None else median


def rate_bytes(text: str) -> float:
    return float(parse_rate(text))


def cases(scenario: Scenario, uplink: str, quick: bool) -> list[tuple[str, list[str] | None]]:
    out: list[tuple[str, list[str] | None]] = [("direct", None), ("fyntr, no flags", [])]
    shaped = int(rate_bytes(uplink) * 0.9)  # a little below the link
    if scenario.key == "d":
        out.append(("fyntr --download-rate 0", ["--download-rate", "0"]))  # download auto off
        if not quick:
            out.append(("fyntr --download-rate 90%", ["--download-rate", str(shaped)]))
    if scenario.key == "a" and not quick:
        out += [
            (
                "fyntr unshaped",
                ["--upload-rate", "0", "--download-rate", "0", "--connect-rate", "0"],
            ),
            (
                "fyntr --upload-rate 90% --connect-rate 20",
                ["--upload-rate", str(shaped), "--connect-rate", "20", "--connect-burst", "4"],
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
    ("probe_p50_ms_5s_after_halving", "probe p50 ms, 5 s after halving"),
    ("makespan_s", "makespan s"),
    ("failures", "failures"),
    ("last_upload_start_s", "last upload starts s"),
    ("syn_drops", "SYNs dropped"),
    ("peak_new_conn_per_10ms", "peak new conns / 10 ms"),
    ("shaped_s", "fyntr shaped s"),
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default="a,b,c,d,e", help="comma list of a, b, c, d, e")
    ap.add_argument("--uplink", default="20mbit", help="router uplink rate (tc syntax)")
    ap.add_argument("--buffer-ms", type=int, default=300, help="uplink FIFO depth, ms")
    ap.add_argument("--quick", action="store_true", help="direct and fyntr with no flags only")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="write a PNG (needs matplotlib)")
    ap.add_argument(
        "--log-dir", type=Path, default=None, help="keep fyntr's INFO log of each case here"
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        print(
            "router.py needs root and iproute2 (ip, tc) to build its network namespaces; skipping."
        )
        return 0
    chosen = [SCENARIOS[k] for k in args.scenarios.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in chosen:
            with network(args.uplink, args.buffer_ms, scenario.syn_limit, scenario.downlink):
                for name, fyntr_args in cases(scenario, args.uplink, args.quick):
                    print(f"running ({scenario.key}) {name} ...", file=sys.stderr, flush=True)
                    rows.append(run_case(name, fyntr_args, scenario, args, Path(tmp)))
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
