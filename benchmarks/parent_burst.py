"""A burst through a parent proxy (docs/parent-proxies.md): 200 CONNECTs at once, each
uploading 512 KiB, sent to the parent directly, through fyntr with ``--upstream``, and
through squid chained to the same parent (``cache_peer ... parent``, ``never_direct``).

    python benchmarks/parent_burst.py [--rounds 3] [--clients 200] [--json PATH]

The parent is tinyproxy (Debian: apt-get install tinyproxy; squid is optional), on
127.0.0.1 like everything else here. The target is this machine's own host name, which
the parent resolves to loopback: fyntr sends every non-loopback target to its parent,
by name, and looks nothing up. Rounds are interleaved and medians reported; the
machine is shared, so compare the ratios. Every flow must arrive whole (the sink
counts its bytes); a failure is reported, never hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from run import free_port, fyntr_command, load, origin_server, wait_port  # benchmarks/

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def loopback_name() -> str:
    """This machine's host name, when it resolves to loopback only."""
    name = socket.gethostname()
    infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    if not infos or any(not str(info[4][0]).startswith("127.") for info in infos):
        sys.exit(f"{name} does not resolve to 127.0.0.0/8 only: add it to /etc/hosts")
    return name


def tinyproxy(workdir: Path, port: int, origin: int) -> list[str]:
    conf = workdir / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 4096\nAllow 127.0.0.1\n"
        f'LogLevel Critical\nLogFile "{workdir / "tp.log"}"\nConnectPort {origin}\n'
    )
    return ["tinyproxy", "-d", "-c", str(conf)]


def squid(workdir: Path, port: int, parent: int) -> list[str]:
    run_dir = workdir / "squid"
    run_dir.mkdir(exist_ok=True)
    run_dir.chmod(0o777)  # squid drops root for its own user
    conf = run_dir / "squid.conf"
    conf.write_text(
        f"http_port 127.0.0.1:{port}\n"
        f"cache_peer 127.0.0.1 parent {parent} 0 no-query default\n"
        "never_direct allow all\n"
        "acl local src 127.0.0.0/8\nhttp_access allow local\nhttp_access deny all\n"
        "cache deny all\ncache_mem 8 MB\naccess_log none\n"
        f"cache_log {run_dir / 'cache.log'}\npid_filename {run_dir / 'squid.pid'}\n"
        f"coredump_dir {run_dir}\nmax_filedescriptors 65536\n"
        "shutdown_lifetime 0 seconds\nvisible_hostname fyntr-benchmark\n"
    )
    return ["squid", "-N", "-f", str(conf)]


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--size", type=int, default=512 * 1024)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if shutil.which("tinyproxy") is None:
        sys.exit("tinyproxy is the parent here: apt-get install tinyproxy")
    host = loopback_name()
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[dict[str, Any]]] = {}
    with origin_server() as (origin, _pid), tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            parent = free_port()
            procs.append(start(tinyproxy(workdir, parent, origin), parent))
            ports = {"parent directly": parent}
            fyntr = free_port()
            procs.append(
                start(
                    fyntr_command(
                        fyntr,
                        "127.0.0.0/8",
                        origin,
                        "--upstream",
                        f"http://127.0.0.1:{parent}",
                        "--max-connections",
                        "0",
                        "--log-level",
                        "error",
                    ),
                    fyntr,
                )
            )
            ports["fyntr -> parent"] = fyntr
            if shutil.which("squid") is not None:
                chained = free_port()
                procs.append(start(squid(workdir, chained, parent), chained))
                ports["squid -> parent"] = chained
            for _ in range(args.rounds):
                for name, port in ports.items():
                    params = {
                        "proxy": port,
                        "origin": origin,
                        "host": host,
                        "clients": args.clients,
                        "size": args.size,
                    }
                    results.setdefault(name, []).append(load("burst", params))
        finally:
            for proc in procs:
                stop(proc)
    base = statistics.median(r["burst_makespan_s"] for r in results["parent directly"])
    print(f"{args.clients} CONNECTs x {args.size} bytes to {host}, median of {args.rounds}")
    print("| case | makespan s | x parent directly | failures (all rounds) |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        makespan = statistics.median(r["burst_makespan_s"] for r in runs)
        failures = sum(r["burst_failures"] for r in runs)
        print(f"| {name} | {makespan:.3f} | {makespan / base:.2f} | {failures} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
