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
import shutil
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from run import Contender, load, origin_server  # benchmarks/


def loopback_name() -> str:
    """This machine's host name, when it resolves to loopback only."""
    name = socket.gethostname()
    infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    if not infos or any(not str(info[4][0]).startswith("127.") for info in infos):
        sys.exit(f"{name} does not resolve to 127.0.0.0/8 only: add it to /etc/hosts")
    return name


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
    results: dict[str, list[dict[str, Any]]] = {}
    with origin_server() as (origin, origin_pid), tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        parent = Contender("tinyproxy", origin, workdir, origin_pid)
        chain = {"parent directly": parent}
        try:
            parent.start()
            upstream = ["--upstream", f"http://127.0.0.1:{parent.port}"]
            chain["fyntr -> parent"] = Contender(
                "fyntr", origin, workdir, origin_pid, extra=upstream
            )
            if shutil.which("squid") is not None:
                chain["squid -> parent"] = Contender(
                    "squid", origin, workdir, origin_pid, parent=parent.port
                )
            for contender in chain.values():
                if contender is not parent:
                    contender.start()
            for _ in range(args.rounds):
                for name, contender in chain.items():
                    params = {
                        "proxy": contender.port,
                        "origin": origin,
                        "host": host,
                        "clients": args.clients,
                        "size": args.size,
                    }
                    results.setdefault(name, []).append(load("burst", params))
        finally:
            for contender in chain.values():
                contender.stop()
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
